"""Profile SGLang batch times (GPU or CPU) and write the CSV that scripts/fit_perf_model.py fits.

    python scripts/profile_sglang.py --model-path meta-llama/Llama-3.1-8B-Instruct \
        --out profile.csv [--load-format dummy] [--tp-size 1] [--device cpu] [--repeats 3] \
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

Columns: num_tokens, spec_steps, kv_read_tokens, time_ms (what the fitter reads), then
time_ms_min, time_ms_max, repeats. ``spec_steps`` is 0: timing draft steps needs an EAGLE draft
model (pass --speculative-* arguments through at your own risk; the one-batch benchmark does not
run drafts).

Repeats: ``--repeats N`` runs every shape N + 1 times in the same benchmark process (the batch
size list is repeated); the first run of each shape is a discarded warm-up, ``time_ms`` is the
median of the other N and ``time_ms_min``/``time_ms_max`` their range. A spread summary is
printed at the end.

``--device cpu`` runs SGLang's CPU engine through sloserve's CPU mode
(``sloserve.sglang.cpu_mode``: the environment and the CPU defaults the launcher uses). Without
it the benchmark needs a CUDA GPU.

Vocabulary: one_batch draws its synthetic prompt ids from [0, 10000) (its
``prepare_synthetic_inputs_for_latency_test``; its warm-up always does, so ``--prompt-filename``
does not avoid it), which fails with an IndexError on a smaller vocabulary. When the model's
config.json gives ``vocab_size`` < 10000, the benchmark runs through a small wrapper that draws
the ids below the vocabulary instead (tensor parallel size 1 only: refused otherwise, naming
the vocabulary).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from sloserve.sglang import cpu_mode  # no sglang import: usable before SGLang starts

COLUMNS = ("num_tokens", "spec_steps", "kv_read_tokens", "num_requests", "time_ms")
SPREAD_COLUMNS = ("time_ms_min", "time_ms_max", "repeats")
ONE_BATCH_ID_BOUND = 10_000  # one_batch draws synthetic prompt ids from [0, 10000)

# Runs sglang.benchmark.one_batch with its synthetic prompt ids drawn below the vocabulary
# (argv[1]); the rest of argv is one_batch's own command line.
SMALL_VOCAB_RUNNER = """
import sys
import numpy as np
import sglang.benchmark.one_batch as ob
vocab = int(sys.argv.pop(1))
_orig = ob.prepare_synthetic_inputs_for_latency_test
def _prepare(batch_size, input_len, custom_inputs=None):
    if not custom_inputs:
        custom_inputs = list(np.random.randint(0, vocab, (batch_size, input_len), dtype=np.int32))
    return _orig(batch_size, input_len, custom_inputs)
ob.prepare_synthetic_inputs_for_latency_test = _prepare
ob.cli_main()
"""


def _shape_rows(rec: dict) -> list[tuple[tuple[str, int, int, int, int], float]]:
    """((kind, num_tokens, spec_steps, kv_read_tokens, num_requests), seconds) for one one_batch record."""
    bs, inp, out = int(rec["batch_size"]), int(rec["input_len"]), int(rec.get("output_len", 0))
    rows = []
    if rec.get("prefill_latency") is not None:
        rows.append((("prefill", bs * inp, 0, 0, bs), float(rec["prefill_latency"])))
    if rec.get("median_decode_latency") is not None and out > 1:
        rows.append((("decode", bs, 0, bs * (inp + out // 2), bs), float(rec["median_decode_latency"])))
    return rows


def rows_from_results(results: Iterable[dict], warmup: int = 0) -> list[dict]:
    """CSV rows from one_batch's JSONL records (records without timings are skipped).

    Records of the same (batch_size, input_len, output_len) are repeats of one shape: the first
    ``warmup`` of each are discarded, ``time_ms`` is the median of the rest and
    ``time_ms_min``/``time_ms_max``/``repeats`` their range and count. Rows keep the order in
    which shapes first appear; two batch shapes with the same token count (4 x 32 and 1 x 128)
    stay two rows."""
    seen: dict[tuple, int] = {}
    times: dict[tuple, list[float]] = {}
    for rec in results:
        key = (int(rec["batch_size"]), int(rec["input_len"]), int(rec.get("output_len", 0)))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= warmup:
            continue
        for shape, seconds in _shape_rows(rec):
            times.setdefault((key, shape), []).append(seconds * 1e3)
    rows = []
    for (_, (_, num_tokens, spec_steps, kv, requests)), ms in times.items():
        rows.append(
            {
                "num_tokens": num_tokens,
                "spec_steps": spec_steps,
                "kv_read_tokens": kv,
                "num_requests": requests,
                "time_ms": round(statistics.median(ms), 4),
                "time_ms_min": round(min(ms), 4),
                "time_ms_max": round(max(ms), 4),
                "repeats": len(ms),
            }
        )
    return rows


def spread_pct(row: dict) -> float:
    """A row's range (max - min) as a percentage of its median."""
    return 100.0 * (row["time_ms_max"] - row["time_ms_min"]) / row["time_ms"]


def spread_summary(rows: Sequence[dict]) -> str:
    """One line: the median and the worst range/median over the rows, and the worst row."""
    spreads = [spread_pct(r) for r in rows]
    if not spreads:
        return "spread: no rows"
    worst = max(range(len(rows)), key=spreads.__getitem__)
    w = rows[worst]
    return (
        f"spread (max-min)/median over {len(rows)} rows, {rows[0].get('repeats', 1)} repeats each:"
        f" median {statistics.median(spreads):.1f}%, worst {spreads[worst]:.1f}%"
        f" (num_tokens={w['num_tokens']}, kv_read_tokens={w['kv_read_tokens']})"
    )


def write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS + SPREAD_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def model_vocab_size(model_path: str) -> int | None:
    """``vocab_size`` from a local model directory's config.json (also under ``text_config``);
    None when the path is not a local directory or gives none (a hub id: not checked)."""
    config = Path(model_path) / "config.json"
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    for d in (doc, doc.get("text_config") or {}):
        if isinstance(d, dict) and isinstance(d.get("vocab_size"), int):
            return d["vocab_size"]
    return None


def check_vocab(vocab: int | None, tp_size: int) -> str | None:
    """None when one_batch can run; else a one-line reason naming the vocabulary."""
    if vocab is not None and vocab < ONE_BATCH_ID_BOUND and tp_size != 1:
        return (
            f"vocab_size {vocab} < {ONE_BATCH_ID_BOUND} (one_batch's synthetic id bound) is only"
            f" handled with --tp-size 1, got {tp_size}"
        )
    return None


def bench_command(
    args: argparse.Namespace, input_len: int, result_file: str, extra: Sequence[str], vocab: int | None = None
) -> list[str]:
    if vocab is not None and vocab < ONE_BATCH_ID_BOUND:
        launcher = [sys.executable, "-c", SMALL_VOCAB_RUNNER, str(vocab)]
    else:
        launcher = [sys.executable, "-m", "sglang.benchmark.one_batch"]
    server_args = list(extra)
    if args.device == "cpu":
        server_args = ["--device", "cpu", *cpu_mode.with_cpu_defaults(server_args)]
    return [
        *launcher,
        "--model-path",
        args.model_path,
        "--load-format",
        args.load_format,
        "--tp-size",
        str(args.tp_size),
        "--batch-size",
        *map(str, list(args.batch_sizes) * (args.repeats + 1 if args.repeats > 1 else 1)),
        "--input-len",
        str(input_len),
        "--output-len",
        str(args.output_len),
        "--result-filename",
        result_file,
        *server_args,
    ]


def bench_env(args: argparse.Namespace, cmd: Sequence[str]) -> dict:
    env = dict(os.environ)
    if args.device == "cpu":
        cpu_mode.activate(env, cmd)
    return env


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--load-format", default="dummy", help="'dummy' = random weights, no download")
    ap.add_argument("--tp-size", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 128])
    ap.add_argument("--input-lens", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="'cpu': SGLang's CPU engine")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per shape; above 1, each shape runs once more as a discarded warm-up and the median is kept",
    )
    ap.add_argument("--raw-out", help="also write one_batch's JSONL records (every run, warm-ups included) here")
    ap.add_argument("--dry-run", action="store_true", help="print the benchmark commands only")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    if args.repeats < 1:
        print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
        return 2
    vocab = model_vocab_size(args.model_path)
    problem = check_vocab(vocab, args.tp_size)
    if problem:
        print(f"error: {args.model_path}: {problem}", file=sys.stderr)
        return 2
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sloserve-profile-") as tmp:
        for input_len in args.input_lens:
            result_file = os.path.join(tmp, f"in{input_len}.jsonl")
            cmd = bench_command(args, input_len, result_file, extra, vocab)
            shown = ["python", "-c", "<small-vocab runner>", *cmd[3:]] if cmd[1] == "-c" else cmd
            print(" ".join(shown), flush=True)
            if args.dry_run:
                continue
            proc = subprocess.run(cmd, env=bench_env(args, cmd))
            if proc.returncode != 0:
                print(f"error: the one-batch benchmark failed for input_len={input_len}", file=sys.stderr)
                return proc.returncode
            with open(result_file) as fh:
                records.extend(json.loads(line) for line in fh if line.strip())
    if args.dry_run:
        return 0
    if args.raw_out:
        with open(args.raw_out, "w") as fh:
            fh.writelines(json.dumps(rec) + "\n" for rec in records)
    rows = rows_from_results(records, warmup=1 if args.repeats > 1 else 0)
    if not rows:
        print("error: the benchmark produced no timings", file=sys.stderr)
        return 1
    write_csv(rows, args.out)
    print(spread_summary(rows))
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
