"""A measured engine's step time with per-request terms, for the simulated engine.

A real serving loop pays per request in a batch (sampling, bookkeeping, the output path) as
well as per token: on SGLang's CPU engine with the tiny model 1.0-1.8 ms per request in a batch
that computes prefill tokens (its extend path, decodes riding along a chunk included; decode-only
batches hardly pay per request) against 14 us per token. ``StepCost`` is a line in (requests,
extend requests, tokens, KV read) fitted with nonnegative coefficients to a served engine's step
log, so the simulator can run *that* engine while the planner keeps its own model, as it does
live (``SimConfig.engine_model``, ``sloserve sim --engine-model FILE``; benchmark/real_vs_sim.py
fits one from its profile). The planner's fitted model (perf/fit.py) has the same terms since
issue 16's follow-up; draft steps are not priced (the step logs have none).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sloserve.core.plan import StepPlan
from sloserve.perf.base import extend_requests, plan_shape
from sloserve.perf.fit import nonneg_lstsq

KIND = "sloserve-step-cost"


@dataclass(frozen=True)
class StepCost:
    base_s: float
    per_item_s: float  # each request in the step
    per_token_s: float  # each token computed (prefill chunk tokens; 1 per decode)
    per_kv_token_s: float  # each token of context read
    # each request in an extend batch (one that computes prefill tokens): SGLang's CPU path runs
    # such a batch, decodes riding along included, through its per-request extend attention
    per_extend_item_s: float = 0.0

    def __post_init__(self) -> None:
        if min(self.base_s, self.per_item_s, self.per_token_s, self.per_kv_token_s, self.per_extend_item_s) < 0:
            raise ValueError(f"step-cost coefficients must be >= 0: {self}")

    def step_time_s(self, num_items, num_tokens, kv_read_tokens):
        """Seconds; scalars or numpy arrays of step shapes alike."""
        return (
            self.base_s
            + self.per_item_s * num_items
            + self.per_token_s * num_tokens
            + self.per_kv_token_s * kv_read_tokens
            + self.per_extend_item_s * extend_requests(num_tokens, num_items)
        )

    def plan_time_s(self, plan: StepPlan) -> float:
        """The simulated engine's step duration (the interface SimulatedEngine calls)."""
        num_tokens, _, kv_read_tokens, _, num_items = plan_shape(plan.items)
        return self.step_time_s(num_items, num_tokens, kv_read_tokens)

    @classmethod
    def fit(cls, num_items, num_tokens, kv_read_tokens, time_s) -> "StepCost":
        """Least squares with every coefficient >= 0 (a coefficient that comes out negative is
        timing noise: it is fixed at 0 and the rest refitted)."""
        items, tokens = np.asarray(num_items, dtype=float), np.asarray(num_tokens, dtype=float)
        extend = extend_requests(tokens, items)
        cols = [np.asarray(c, dtype=float) for c in (np.ones(len(time_s)), items, tokens, kv_read_tokens, extend)]
        x, y = np.column_stack(cols), np.asarray(time_s, dtype=float)
        if y.size < x.shape[1] or not np.all(np.isfinite(y)):
            raise ValueError(f"a step-cost fit needs {x.shape[1]}+ finite step times, got {y.size}")
        coef, _ = nonneg_lstsq(x, y, set(range(x.shape[1])))
        return cls(*(float(c) for c in coef))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"kind": KIND, **asdict(self)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "StepCost":
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"engine model {str(path)!r}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            raise ValueError(f"engine model {str(path)!r} is not a {KIND} file")
        try:
            coefs = {k: float(doc[k]) for k in ("base_s", "per_item_s", "per_token_s", "per_kv_token_s")}
            return cls(**coefs, per_extend_item_s=float(doc.get("per_extend_item_s", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"engine model {str(path)!r}: {exc}") from None
