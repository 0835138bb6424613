"""``benchmark/bench_serving.py``: parse flags, run every target, print, write outputs.

Exit status: 0 done, 2 bad flags (one line), 1 the benchmark could not run (one line, e.g. an
unreachable server or a server that failed to start).
"""

from __future__ import annotations

import sys
from typing import Sequence

from sloserve.bench.client import BenchError
from sloserve.bench.compare import TargetRuns, run_target, table, targets, write_plots
from sloserve.bench.config import config_from_args


def print_result(r: dict) -> None:
    """SGLang-style block for one run."""
    rows = [
        ("Target", r.get("label")),
        ("Backend", r["backend"]),
        ("Request rate", r["request_rate"]),
        ("Burstiness (CV)", r["burstiness"]),
        ("Successful programs", r["completed"]),
        ("Benchmark duration (s)", f"{r['duration']:.2f}"),
        ("Output token throughput (tok/s)", f"{r['output_throughput']:.2f}"),
        ("SLO attainment", f"{r['attainment']:.1%}"),
        ("Goodput (programs/s)", f"{r['goodput_rps']:.3f}"),
        ("Admitted (server-reported)", "-" if r["admitted_fraction"] is None else f"{r['admitted_fraction']:.1%}"),
    ]
    for name in ("ttft", "tpot", "itl", "e2e_latency"):
        rows.append((f"Median / P99 {name.upper()} (ms)", f"{_f(r[f'median_{name}_ms'])} / {_f(r[f'p99_{name}_ms'])}"))
    for key in ("attainment_by_tier", "attainment_by_stage", "attainment_by_segment"):
        if r[key]:
            rows.append((key.replace("_", " "), ", ".join(f"{k} {v:.1%}" for k, v in r[key].items())))
    if r["num_errors"]:
        rows.append(("Errors", f"{r['num_errors']} (first: {r['first_error']})"))
    print("{s:{c}^60}".format(s=" SLO Serving Benchmark Result ", c="="))
    for name, value in rows:
        print(f"{name:<34}{value}")
    print("=" * 60)


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: Sequence[str] | None = None, prog: str = "bench_serving.py") -> int:
    cfg = config_from_args(argv, prog)
    all_runs: list[TargetRuns] = []
    try:
        for label, open_target in targets(cfg):
            with open_target() as url:
                runs = run_target(cfg, label, url)
            all_runs.append(runs)
            for r in runs.results:
                print_result(r)
    except BenchError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1
    except (ValueError, FileNotFoundError, KeyError) as exc:  # bad dataset/trace contents
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    if len(all_runs) > 1 or any(len(t.results) > 1 for t in all_runs):
        print(table(all_runs))
    if cfg.plot_dir:
        for path in write_plots(cfg, all_runs):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
