"""Online output-length predictor (``output_length="learn"``): no model weights.

The prediction for a request is an empirical quantile (``length_quantile``, the median by default) of the output
lengths of recently finished requests with the same SLO class and prompt-length bucket (powers of
two), learned online from completions. Until a bucket has ``length_min_samples`` lengths the
class's pooled lengths are used, and until the class has that many the prior: the request's
``max_new_tokens`` (what reserve mode plans: safe, merely costly), so predictions only ever
start conservative.

When a request reaches its prediction and goes on (``extend``): the new prediction is the same
quantile of the lengths observed *beyond* its current length (conditional on having come this
far), or twice the current length when too few are known, never above ``max_new_tokens``. The
policy keeps the extension only if the plan stays feasible and the KV fits; otherwise it tries
shorter ones and, when none fits, demotes the request to best effort until a plan fits again
(planner/overrun.py), so the admitted rest keep their guarantee. A low quantile plans less KV
up front and leans on those extensions: the median beat the 0.7 quantile once they existed
(docs/planner.md §5).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sloserve.core.request import Request


def prompt_bucket(prompt_tokens: int) -> int:
    """Power-of-two bucket of a prompt length (0: up to 64 tokens, then 128, 256, ...)."""
    return max(int(math.ceil(math.log2(max(prompt_tokens, 1)))) - 6, 0)


class LengthPredictor:
    def __init__(self, quantile: float = 0.9, min_samples: int = 20, window: int = 1000) -> None:
        if not 0 < quantile <= 1 or min_samples < 1 or window < min_samples:
            raise ValueError("need 0 < quantile <= 1, min_samples >= 1 and window >= min_samples")
        self.quantile, self.min_samples, self.window = quantile, min_samples, window
        self._by_key: dict[tuple[str, int], deque] = {}
        self._by_class: dict[str, deque] = {}

    def observe(self, slo_class: str, prompt_tokens: int, output_tokens: int) -> None:
        """A request finished with this many output tokens."""
        for table, key in ((self._by_key, (slo_class, prompt_bucket(prompt_tokens))), (self._by_class, slo_class)):
            q = table.get(key)
            if q is None:
                q = table[key] = deque(maxlen=self.window)
            q.append(int(output_tokens))

    def samples(self, r: Request) -> deque | None:
        """The lengths a prediction for ``r`` rests on (its bucket, else its class), or None."""
        got = self._by_key.get((r.slo_class, prompt_bucket(r.prompt_tokens)))
        if got is not None and len(got) >= self.min_samples:
            return got
        got = self._by_class.get(r.slo_class)
        return got if got is not None and len(got) >= self.min_samples else None

    def predict(self, r: Request, prior: int) -> int:
        """Planned output length of a request that has not started decoding."""
        s = self.samples(r)
        pred = prior if s is None else int(np.quantile(np.fromiter(s, dtype=np.int64), self.quantile, method="higher"))
        return self._clamp(r, pred)

    def extend(self, r: Request) -> int:
        """A longer plan for a request that reached its prediction and is still going."""
        done = r.num_output_tokens
        s = self.samples(r)
        longer = None if s is None else np.fromiter((x for x in s if x > done + 1), dtype=np.int64)
        if longer is not None and longer.size >= max(self.min_samples // 4, 1):
            pred = int(np.quantile(longer, self.quantile, method="higher"))
        else:
            pred = 2 * max(done, 1)
        return self._clamp(r, pred)

    @staticmethod
    def _clamp(r: Request, pred: int) -> int:
        if r.max_new_tokens is not None:
            pred = min(pred, r.max_new_tokens)
        return max(pred, r.num_output_tokens + 1)


class LengthPlanner:
    """The output length the plan assumes for a request: its true length (known), its
    ``max_new_tokens`` (reserve), ``predict_margin`` x its class's mean (predict) or the
    predictor's quantile (learn, fixed at admission in ``PlanTable.pred``)."""

    def __init__(self, config, table, kv) -> None:
        self.config, self.table, self.kv = config, table, kv
        self.mode = config.output_length
        self.predictor = LengthPredictor(config.length_quantile, config.length_min_samples, config.length_window)
        self.out_stats: dict[str, tuple[int, int]] = {}  # class -> (finished, output tokens)

    def planned_output(self, r: Request) -> int:
        """Output length the plan assumes (true, max_new_tokens, or a prediction)."""
        if r.output_tokens_known or self.mode == "reserve":
            return r.planning_output_tokens
        pred = self.table.pred.get(r.request_id)
        if pred is None and self.mode == "learn":
            pred = self.predictor.predict(r, self.config.length_prior_tokens or r.planning_output_tokens)
        elif pred is None:
            n, total = self.out_stats.get(r.slo_class, (0, 0))
            pred = total / n * self.config.predict_margin if n else self.config.predict_prior_tokens
            if r.max_new_tokens is not None:
                pred = min(pred, r.max_new_tokens)
        return max(int(math.ceil(pred)), r.num_output_tokens + 1)

    def mem_blocks(self, r: Request) -> int:
        return self.kv.blocks_for(r.prompt_tokens + self.planned_output(r))

    def fix_at_admission(self, r: Request) -> None:
        """Learn mode: the prediction an admitted request was planned with holds while it does."""
        if self.mode == "learn" and not r.output_tokens_known:
            self.table.pred.setdefault(r.request_id, self.planned_output(r))

    def set_planned(self, request_id: str, pred: int | None) -> None:
        self.table.pred[request_id] = pred

    def observe(self, r: Request) -> None:
        """A request left: a finished one with a hidden length teaches the predictors."""
        if r.finish_s is not None and not r.output_tokens_known:
            n, total = self.out_stats.get(r.slo_class, (0, 0))
            self.out_stats[r.slo_class] = (n + 1, total + r.num_output_tokens)
            self.predictor.observe(r.slo_class, r.prompt_tokens, r.num_output_tokens)

    def extend(self, r: Request, planned: int, cap: int) -> int:
        """A longer plan for a request that reached ``planned`` (learn: conditional quantile)."""
        return self.predictor.extend(r) if self.mode == "learn" else min(2 * planned, cap)
