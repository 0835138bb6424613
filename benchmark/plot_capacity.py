"""Attainment against rate, one line per policy, capacity points marked, from capacity JSONs.

    python benchmark/plot_capacity.py --per-gpu --out docs/img/coder.png --title coder out_vllm.json out_slos.json

Each input is the JSON written by ``python -m sloserve.sim capacity --json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from sloserve.plotting import plot_capacity
from sloserve.sim.capacity import CapacityPoint, CapacityResult


def load(path: str, per_gpu: bool) -> tuple[str, CapacityResult]:
    with open(path) as fh:
        data = json.load(fh)
    scale = 1.0 / data["num_gpus"] if per_gpu else 1.0  # compare systems using different GPU counts
    points = tuple(CapacityPoint(**{**p, "rate_rps": p["rate_rps"] * scale}) for p in data["points"])
    res = CapacityResult(
        data["capacity_rps"] * scale, data["capacity_rps_per_gpu"], data["num_gpus"], data["target_attainment"], points
    )
    return data.get("policy", path), res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="capacity JSON files")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="")
    ap.add_argument("--per-gpu", action="store_true", help="plot rate per GPU (for DistServe and multi-replica runs)")
    args = ap.parse_args(argv)
    try:
        results = dict(load(p, args.per_gpu) for p in args.inputs)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot_capacity(
        results, args.out, title=args.title, xlabel="arrival rate per GPU (requests/s/GPU)" if args.per_gpu else None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
