"""Fit the paper's max-of-lines batch-time form to a profile CSV and write a JSON preset.

    python scripts/fit_perf_model.py PROFILE.csv --out my-model.json [--lines 2] [--name NAME]
        [--max-under-share 0.05] [--holdout-frac 0.2] [--seed 0] [--max-mape-pct 25] [--force]
    python scripts/fit_perf_model.py --synthesize llama-3-8b-h100 --out-csv profile.csv

PROFILE.csv columns: num_tokens, optional spec_steps, optional kv_read_tokens, and time_ms or
time_s. The JSON loads with ``get_model("my-model.json")`` / ``--model my-model.json``.
``--synthesize PRESET`` writes a profile timed by a preset instead (to fit the paper form to a
roofline preset, or to try the workflow without a GPU).

Trust: a seeded share of the rows (``--holdout-frac``, default 0.2; 0 fits all rows) is held
out, the fit is made on the rest and R^2/MAPE are reported on both. A fit with a negative
per-token, per-draft-step, per-KV-token or per-request coefficient, a non-positive empty-step time, or a
MAPE above ``--max-mape-pct`` (on the held-out rows when there are any) is refused with one line
and exit code 2 and nothing written; ``--force`` writes it anyway with a warning. The KV term
(``per_kv_token_s``) is fitted whenever ``kv_read_tokens`` varies in the profile, the per-request
terms (``per_request_s``, and ``per_extend_request_s`` for batches that compute prefill tokens)
whenever a ``num_requests`` column varies apart from ``num_tokens``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sloserve.perf import get_model
from sloserve.perf.fit import (
    fit_lines,
    fit_problems,
    holdout_split,
    inflate,
    load_profile_csv,
    profile_from_model,
    save_fit_json,
    score,
    subset,
    write_profile_csv,
)


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
    ap.add_argument("--holdout-frac", type=float, default=0.2, help="share of rows held out to score the fit")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    ap.add_argument("--max-mape-pct", type=float, default=25.0, help="refuse a fit whose (held-out) MAPE is above this")
    ap.add_argument(
        "--time-column",
        help="time column to fit, in ms (default time_ms or time_s; e.g. time_ms_min: the fastest repeat)",
    )
    ap.add_argument("--force", action="store_true", help="write an untrustworthy fit anyway (with a warning)")
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
        data = load_profile_csv(args.profile, args.time_column)
        train_idx, test_idx = holdout_split(len(data), args.holdout_frac, args.seed)
        train = subset(data, train_idx)
        fit = fit_lines(train, args.lines)
        if args.max_under_share is not None:
            fit = inflate(fit, train, args.max_under_share)
        held = score(fit, subset(data, test_idx)) if test_idx.size else None
        problems = fit_problems(fit, args.max_mape_pct, held.mape_pct if held else None)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(data)} rows ({len(train)} fitted, {test_idx.size} held out, seed {args.seed}), {args.lines} line(s)"
        + (f", breakpoint at {fit.breakpoint_tokens:g} tokens" if fit.breakpoint_tokens is not None else "")
    )
    for i, line in enumerate(fit.lines):
        print(
            f"  line {i}: {line.per_token_s:.6e} * tokens + {line.per_spec_step_s:.6e} * spec_steps"
            f" + {line.per_kv_token_s:.6e} * kv_read_tokens + {line.per_request_s:.6e} * requests"
            f" + {line.per_extend_request_s:.6e} * requests in an extend batch + {line.base_s:.6e}  (seconds)"
        )
    print(
        f"R^2 {fit.r2:.5f}   MAPE {fit.mape_pct:.2f}%   under-predicted {fit.under_share:.1%} of rows"
        f" (worst {fit.max_under_pct:.1f}%)" + ("  [fitted rows]" if held else "")
    )
    if held:
        print(
            f"R^2 {held.r2:.5f}   MAPE {held.mape_pct:.2f}%   under-predicted {held.under_share:.1%} of rows"
            f" (worst {held.max_under_pct:.1f}%)  [held-out rows]"
        )
    if problems:
        message = "untrustworthy fit: " + "; ".join(problems)
        if not args.force:
            print(f"error: {message} (--force to write it anyway)", file=sys.stderr)
            return 2
        print(f"warning: {message} (written because of --force)", file=sys.stderr)
    if args.out:
        name = args.name or Path(args.out).stem
        save_fit_json(fit, args.out, name, source=str(args.profile))
        print(f"wrote {args.out} (use --model {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
