"""Profile SGLang batch times on a GPU and write the CSV that scripts/fit_perf_model.py fits.

    python scripts/profile_sglang.py --model-path meta-llama/Llama-3.1-8B-Instruct \
        --out profile.csv [--load-format dummy] [--tp-size 1] \
        [--batch-sizes 1 4 16 64 128] [--input-lens 64 256 1024 4096] [--output-len 32] \
        [-- any other SGLang server arguments]
    python scripts/fit_perf_model.py profile.csv --out my-model.json
    python -m sloserve.sglang.launch --perf-model my-model.json --model-path ...

It runs SGLang's own one-batch benchmark (``sglang.benchmark.one_batch``: a ModelRunner with
CUDA graphs, no HTTP server, dummy weights by default so no download is needed beyond the
model config) once per input length, over all batch sizes, and converts its results:

* a prefill row per (batch size, input length): ``num_tokens = bs * input_len``, no KV read;
* a decode row: ``num_tokens = bs``, ``kv_read_tokens = bs * (input_len + output_len / 2)``
  (the median decode step's context), timed by the median decode step.

Columns: num_tokens, spec_steps, kv_read_tokens, time_ms. ``spec_steps`` is 0: timing draft
steps needs an EAGLE draft model (pass --speculative-* arguments through at your own risk; the
one-batch benchmark does not run drafts). Needs a CUDA GPU and SGLang installed with its CUDA
dependencies.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from typing import Iterable, Sequence

COLUMNS = ("num_tokens", "spec_steps", "kv_read_tokens", "time_ms")


def rows_from_results(results: Iterable[dict]) -> list[dict]:
    """CSV rows from one_batch's JSONL records (records without timings are skipped)."""
    rows = []
    for rec in results:
        bs, inp, out = int(rec["batch_size"]), int(rec["input_len"]), int(rec.get("output_len", 0))
        if rec.get("prefill_latency") is not None:
            rows.append(
                {
                    "num_tokens": bs * inp,
                    "spec_steps": 0,
                    "kv_read_tokens": 0,
                    "time_ms": round(float(rec["prefill_latency"]) * 1e3, 4),
                }
            )
        if rec.get("median_decode_latency") is not None and out > 1:
            rows.append(
                {
                    "num_tokens": bs,
                    "spec_steps": 0,
                    "kv_read_tokens": bs * (inp + out // 2),
                    "time_ms": round(float(rec["median_decode_latency"]) * 1e3, 4),
                }
            )
    return rows


def write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def bench_command(args: argparse.Namespace, input_len: int, result_file: str, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sglang.benchmark.one_batch",
        "--model-path",
        args.model_path,
        "--load-format",
        args.load_format,
        "--tp-size",
        str(args.tp_size),
        "--batch-size",
        *map(str, args.batch_sizes),
        "--input-len",
        str(input_len),
        "--output-len",
        str(args.output_len),
        "--result-filename",
        result_file,
        *extra,
    ]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--load-format", default="dummy", help="'dummy' = random weights, no download")
    ap.add_argument("--tp-size", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 128])
    ap.add_argument("--input-lens", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--dry-run", action="store_true", help="print the benchmark commands only")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sloserve-profile-") as tmp:
        for input_len in args.input_lens:
            result_file = os.path.join(tmp, f"in{input_len}.jsonl")
            cmd = bench_command(args, input_len, result_file, extra)
            print(" ".join(cmd), flush=True)
            if args.dry_run:
                continue
            proc = subprocess.run(cmd)
            if proc.returncode != 0:
                print(f"error: the one-batch benchmark failed for input_len={input_len}", file=sys.stderr)
                return proc.returncode
            with open(result_file) as fh:
                records.extend(json.loads(line) for line in fh if line.strip())
    if args.dry_run:
        return 0
    rows = rows_from_results(records)
    if not rows:
        print("error: the benchmark produced no timings", file=sys.stderr)
        return 1
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
