"""Fit the paper's max-of-lines batch-time form to a profile CSV and write a JSON preset.

    python scripts/fit_perf_model.py PROFILE.csv --out my-model.json [--lines 2] [--name NAME]
        [--max-under-share 0.05]
    python scripts/fit_perf_model.py --synthesize llama-3-8b-h100 --out-csv profile.csv

PROFILE.csv columns: num_tokens, optional spec_steps, optional kv_read_tokens, and time_ms or
time_s. The JSON loads with ``get_model("my-model.json")`` / ``--model my-model.json``.
``--synthesize PRESET`` writes a profile timed by a preset instead (to fit the paper form to a
roofline preset, or to try the workflow without a GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sloserve.perf import get_model
from sloserve.perf.fit import fit_lines, inflate, load_profile_csv, profile_from_model, save_fit_json, write_profile_csv


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", help="profile CSV to fit")
    ap.add_argument("--lines", type=int, default=2, choices=(1, 2), help="number of lines in the max")
    ap.add_argument("--name", default="", help="model name stored in the JSON (default: file stem)")
    ap.add_argument("--out", help="write the fitted model as JSON here")
    ap.add_argument(
        "--max-under-share",
        type=float,
        default=None,
        help="scale the fit until at most this share of rows is under-predicted (e.g. 0.05)",
    )
    ap.add_argument("--synthesize", metavar="PRESET", help="write a profile timed by PRESET instead of fitting")
    ap.add_argument("--out-csv", help="where --synthesize writes its profile")
    return ap


def _synthesize(preset: str, out_csv: str) -> None:
    model = get_model(preset)
    tokens = [1, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    data = profile_from_model(model, tokens, spec_steps=(0, 1, 2, 4), kv_read_tokens=(0, 16_000, 64_000))
    write_profile_csv(data, out_csv)
    print(f"wrote {len(data)} rows timed by {preset} to {out_csv}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.synthesize:
            if not args.out_csv:
                raise ValueError("--synthesize needs --out-csv")
            _synthesize(args.synthesize, args.out_csv)
            return 0
        if not args.profile:
            raise ValueError("give a profile CSV (or --synthesize PRESET --out-csv FILE)")
        data = load_profile_csv(args.profile)
        fit = fit_lines(data, args.lines)
        if args.max_under_share is not None:
            fit = inflate(fit, data, args.max_under_share)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(data)} rows, {args.lines} line(s)"
        + (f", breakpoint at {fit.breakpoint_tokens:g} tokens" if fit.breakpoint_tokens is not None else "")
    )
    for i, line in enumerate(fit.lines):
        print(
            f"  line {i}: {line.per_token_s:.6e} * tokens + {line.per_spec_step_s:.6e} * spec_steps"
            f" + {line.per_kv_token_s:.6e} * kv_read_tokens + {line.base_s:.6e}  (seconds)"
        )
    print(
        f"R^2 {fit.r2:.5f}   MAPE {fit.mape_pct:.2f}%   under-predicted {fit.under_share:.1%} of rows"
        f" (worst {fit.max_under_pct:.1f}%)"
    )
    if args.out:
        name = args.name or Path(args.out).stem
        save_fit_json(fit, args.out, name, source=str(args.profile))
        print(f"wrote {args.out} (use --model {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
