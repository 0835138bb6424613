"""Calls per second of max_tokens_within_s: closed form vs the generic bisection.

    python scripts/bench_perf_model.py [--presets llama-3-8b-a100,opt-13b-tp2-a100] [--calls 20000]

The generic method is BatchTimeModel.max_tokens_within_s (exponential + binary search over
batch_time_s) called on the same model object, so both answer the same question. Roofline
presets are also timed with the conservative prefill-attention bound (added_context_tokens).
"""

from __future__ import annotations

import argparse
import random
import time

from sloserve.perf import get_model
from sloserve.perf.base import BatchTimeModel
from sloserve.perf.roofline import RooflineModel


def _queries(count: int, seed: int) -> list[tuple[float, int, int]]:
    rng = random.Random(seed)  # budgets 10-200 ms, up to 4 draft steps, up to 256k context tokens
    return [(rng.uniform(0.01, 0.2), rng.randint(0, 4), rng.randint(0, 256_000)) for _ in range(count)]


def _rate(fn, queries) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = [fn(t, s, kv) for t, s, kv in queries]
    return len(queries) / (time.perf_counter() - t0), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="llama-3-8b-a100,llama-2-70b-tp4-h100,opt-13b-tp2-a100")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    queries = _queries(args.calls, args.seed)
    print(
        f"{'preset':28s} {'closed form calls/s':>20s} {'bisection calls/s':>18s} {'speed-up':>9s}  same answers"
        f"  {'with added_context_tokens calls/s':>34s}"
    )
    for name in args.presets.split(","):
        model = get_model(name)
        fast, a = _rate(model.max_tokens_within_s, queries)
        slow, b = _rate(lambda t, s, kv: BatchTimeModel.max_tokens_within_s(model, t, s, kv), queries)  # noqa: B023
        ctx = "n/a"
        if isinstance(model, RooflineModel):  # a 2048-token prompt's chunk on top of decodes (pairs = kv + 64)
            rate, _ = _rate(
                lambda t, s, kv: model.max_tokens_within_s(t, s, kv, kv + 64, added_context_tokens=2048),  # noqa: B023
                queries,
            )
            ctx = f"{rate:,.0f}"
        print(f"{name:28s} {fast:20,.0f} {slow:18,.0f} {fast / slow:8.1f}x  {str(a == b):12s}  {ctx:>34s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
