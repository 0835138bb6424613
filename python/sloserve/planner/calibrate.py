"""Online calibration of the batch-time model from observed step times (``calibrate``).

The planner's guarantee assumes each step takes the model's time. A real engine does not: the
model is biased (fitted elsewhere, other load on the host) and every step is noisy. After each
step the policy reports (predicted, observed); ``CalibratedModel`` keeps the last ``window``
ratios observed / predicted and scales the model by a high quantile of them (``quantile``,
never below 1), so step token caps, forecasts and admission all plan for a step that is slower
than all but a ``1 - quantile`` fraction of recent steps. The remaining tail is absorbed by the
slack that cumulative deadlines bank (and by planning against deadlines tighter than the metric's,
``planning_tolerance < tolerance``). The scale is 1 (the model as given) until a step's time
differs from the model's, then ``prior_scale`` until ``min_samples`` steps were seen (a prior
above 1 protects the first admissions on an engine not yet measured), then the quantile,
recomputed every ``every`` steps (the planner's step grids are memoized and are dropped when it
changes). With an engine that matches the model (the simulator's default) nothing changes.

``tail_quantile`` (above ``quantile``) is the ratio a single step may run at: the executor sizes a
step that ends at a decode deadline (or at the end the last plan chose for a first step) for it
(``tail_factor``), while admission and forecasts, which sum many steps whose noise averages out,
plan at ``quantile``. It is the larger of the window's empirical quantile and that quantile of a
lognormal fitted to the window (the empirical one of a short window is its maximum). Capped like
the scale. In the affine form the tail is taken over observed / (scale x predicted + offset), the
steps as the correction plans them, and moves only beyond the correction's dead band.

``shortest_step_s`` is the one-token step the KV profile may count on as a lower bound (section
3b of docs/planner.md): the model's, scaled by the smallest observed ratio when that is below 1.
``shortest_run_s`` is the same bound for ``GROWTH_RUN_STEPS`` consecutive steps: the smallest
ratio of their summed observed to summed predicted times seen so far (``low_run``), so such a run
takes at least ``low_run`` x its predicted time (a ratio of sums, not a mean of ratios, so that it
holds for steps of any shape: the KV profile applies it to speculative steps too). Noise that
makes one step fast rarely makes sixteen in a row fast, so a request cannot grow at the fastest
single step's pace for long.

Pure and deterministic: the ratios come from the driver (virtual time in the simulator).
"""

from __future__ import annotations

from collections import deque
from statistics import NormalDist

import numpy as np

from sloserve.perf.base import BatchTimeModel

AFFINE_GRID = 41  # scales tried by the affine form: 1 to max_scale in 5% steps (the default cap 3)
# the KV profile's run bound (``shortest_run_s``): runs of this many consecutive steps. Their mean
# ratio's minimum under 10% lognormal noise is about 0.93 against 0.74 for a single step
GROWTH_RUN_STEPS = 16


class CalibratedModel(BatchTimeModel):
    def __init__(
        self,
        base: BatchTimeModel,
        quantile: float = 0.99,
        window: int = 512,
        min_samples: int = 8,
        every: int = 4,
        max_scale: float = 3.0,
        prior_scale: float = 1.0,
        tail_quantile: float = 0.0,
        affine: bool = False,
        min_change: float = 0.05,
        run_steps: int = 1,
    ) -> None:
        if not 0 < quantile <= 1 or window < min_samples or min_samples < 1 or every < 1 or prior_scale < 1:
            raise ValueError("need 0 < quantile <= 1, 1 <= min_samples <= window, every >= 1, prior_scale >= 1")
        if not 1 <= run_steps <= min_samples:
            raise ValueError("need 1 <= run_steps <= min_samples")
        # the quantile is taken over runs of this many consecutive steps (summed): a deadline a few
        # steps away is missed by a slow run of steps, not by one slow step beside fast ones
        self.run_steps = run_steps
        self.base = base
        self.name = f"{getattr(base, 'name', '')}+calibrated"
        self.quantile, self.min_samples, self.every, self.max_scale = quantile, min_samples, every, max_scale
        self.tail_quantile = tail_quantile
        self._tail_z = NormalDist().inv_cdf(tail_quantile) if 0 < tail_quantile < 1 else 0.0
        self.affine = affine
        self.min_change = min_change  # a smaller move keeps the current correction (see _settle)
        self.offset_s = 0.0  # affine form: seconds added to every step (a fixed cost, stalls)
        self.pairs: deque = deque(maxlen=window)  # (predicted, observed) seconds, for the affine form
        self.tail = 1.0  # the tail quantile's ratio (>= scale)
        self.ratios: deque = deque(maxlen=window)
        self.prior_scale = prior_scale
        self.scale = 1.0  # the model as given, until a step shows the engine differs from it
        self.low = 1.0  # smallest observed ratio (<= 1)
        self._recent: deque = deque(maxlen=GROWTH_RUN_STEPS)  # the last run's (predicted, observed)
        # smallest observed / predicted of a run's summed times (None: no run seen yet)
        self.low_run: float | None = None
        self._since = 0

    @classmethod
    def from_config(cls, base: BatchTimeModel, cfg) -> "CalibratedModel":
        """The model as ``SLOsServeConfig``'s ``calibrate_*`` options set it up."""
        return cls(
            base,
            cfg.calibrate_quantile,
            cfg.calibrate_window,
            prior_scale=cfg.calibrate_prior,
            tail_quantile=cfg.calibrate_tail_quantile,
            affine=cfg.calibrate_form == "affine",
            run_steps=cfg.calibrate_run_steps,
        )

    def observe(self, predicted_s: float, observed_s: float) -> bool:
        """Record one step; True when the scale changed (the caller drops cached grids)."""
        if predicted_s <= 0 or observed_s <= 0:
            return False
        ratio = observed_s / predicted_s
        self.ratios.append(ratio)
        if self.affine or self.run_steps > 1:
            self.pairs.append((predicted_s, observed_s))
        self.low = min(self.low, ratio)
        self._recent.append((predicted_s, observed_s))
        if len(self._recent) == GROWTH_RUN_STEPS:
            run = sum(o for _, o in self._recent) / sum(p for p, _ in self._recent)
            self.low_run = run if self.low_run is None else min(self.low_run, run)
        self._since += 1
        if len(self.ratios) < self.min_samples:
            if abs(ratio - 1.0) <= 1e-9 or self.scale == self.prior_scale:
                return False
            self.scale = self.prior_scale  # the engine is not the model: the prior until enough is seen
            return True
        if self._since < self.every and len(self.ratios) > self.min_samples:
            return False
        self._since = 0
        if self.affine:
            return self._fit_affine()
        single = np.fromiter(self.ratios, dtype=np.float64)
        if self.run_steps > 1:
            pred, obs = self._runs()
            arr = obs / pred
        else:
            arr = single
        q = float(np.quantile(arr, self.quantile, method="higher"))
        new = min(max(q, 1.0), self.max_scale)
        if self.tail_quantile > self.quantile:
            # the tail is one step's: the executor sizes a single step for it, whatever the runs
            self.tail = max(self._tail_ratio(single), new)  # new <= max_scale already
        return self._settle(new, 0.0)

    def _fit_affine(self) -> bool:
        """``observed <= scale x predicted + offset`` for all but a ``1 - quantile`` fraction of
        recent steps, the pair that makes the recent steps' planned time smallest: for each
        scale on a grid from 1 to ``max_scale`` the offset is the ``quantile`` of what steps took
        beyond ``scale x predicted`` (never below 0). Noise proportional to the step (a slower
        engine) gives a scale and no offset; a fixed cost per step or a host that preempts the
        engine for milliseconds whatever the step's size gives an offset and a scale near 1.
        A multiplier alone, fitted to such a tail, scales big steps far past what they take and
        leaves the planner cutting steps small, each paying the stall again (live, issue 16:
        the scale ran to its cap)."""
        both = np.asarray(self.pairs, dtype=np.float64)
        pred, obs = self._runs(both)
        scales = np.linspace(1.0, self.max_scale, AFFINE_GRID)
        excess = obs[None, :] - scales[:, None] * pred[None, :]
        offsets = np.maximum(np.quantile(excess, self.quantile, axis=1, method="higher"), 0.0)
        # bounded like the scale: at most what max_scale adds to the median step
        offsets = np.minimum(offsets, float(np.median(pred)) * (self.max_scale - 1.0))
        planned = scales * float(pred.mean()) + offsets  # the window's mean step as planned
        # ties (steps all of one size fit a scale or an offset alike) go to the larger scale,
        # which extrapolates to a bigger step safely
        best = int(np.nonzero(planned <= planned.min() * (1.0 + 1e-3))[0][-1])
        # judged at a short and the longest recent single step (see _settle)
        steps_s = both[:, 0]
        changed = self._settle(
            float(scales[best]), float(offsets[best]), (float(np.quantile(steps_s, 0.1)), float(steps_s.max()))
        )
        if self.tail_quantile > self.quantile:
            # the tail relative to the steps as now planned: a step that ends at a deadline is
            # sized for it (tail_factor = 1 / that ratio), the rest keep the quantile
            tail = self.scale * self._tail_ratio(obs / (self.scale * pred + self.offset_s))
            # with the correction's dead band: grids are memoized per tail factor (_settle)
            if changed or abs(tail - self.tail) > self.min_change * self.tail:
                self.tail = tail
        return changed

    def _tail_ratio(self, arr: np.ndarray) -> float:
        """The ``tail_quantile`` of the ratios ``arr`` (at least 1, at most ``max_scale``): the
        larger of their empirical quantile and that of a lognormal fitted to them, since the
        empirical 0.999 quantile of a few hundred steps is their maximum, exceeded by about one
        step in the window's size. Capped like the scale: one stall in the window must not
        shrink every deadline step."""
        logs = np.log(arr)
        tail = max(
            float(np.quantile(arr, self.tail_quantile, method="higher")),
            float(np.exp(logs.mean() + self._tail_z * logs.std())),
        )
        return min(max(tail, 1.0), self.max_scale)

    def _runs(self, both: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, observed) seconds per step, averaged over every run of ``run_steps``
        consecutive recent steps (each step alone when ``run_steps`` is 1); ``both``: the recent
        (predicted, observed) pairs as an array, when the caller has it already."""
        both = np.asarray(self.pairs, dtype=np.float64) if both is None else both
        pred, obs = both[:, 0], both[:, 1]
        k = self.run_steps
        if k <= 1 or pred.size < k:
            return pred, obs
        kernel = np.full(k, 1.0 / k)
        return np.convolve(pred, kernel, "valid"), np.convolve(obs, kernel, "valid")

    def _settle(self, scale: float, offset_s: float, steps_s: tuple[float, ...] = (1.0,)) -> bool:
        """Adopt a new correction only when it moves the planned time of a step of some model
        time in ``steps_s`` by more than ``min_change`` (relative): every change drops the
        planner's memoized grids, and a quantile that wanders by a percent each recomputation had
        the live planner rebuilding them every few steps, its own CPU time then slowing the steps
        it plans (issue 16). The scale form's change is relative, the same at any size, so one
        reference does; the affine form passes a short and the longest recent step, since with
        steps mostly of one size its scale and offset trade against each other (judged by its
        parameters the correction flipped live every 8 steps at the 0.8 quantile). A move to or
        from the model as given (scale 1, no offset), or to the cap, always counts."""
        same = all(
            abs((scale - self.scale) * x + offset_s - self.offset_s)
            <= self.min_change * (self.scale * x + self.offset_s)
            for x in steps_s
        )
        as_given = (self.scale, self.offset_s) == (1.0, 0.0) or (scale, offset_s) == (1.0, 0.0)
        if same and scale != self.max_scale and not as_given:
            return False
        changed = (scale, offset_s) != (self.scale, self.offset_s)
        self.scale, self.offset_s = scale, offset_s
        return changed

    def stats(self) -> dict:
        """The correction, and what it was learned from: how many recent steps and their median
        observed / modelled time (below 1: the engine is faster than the model, nothing to correct)."""
        return {
            "calibration_scale": float(self.scale),
            "calibration_offset_ms": float(self.offset_s * 1e3),
            "calibration_steps": len(self.ratios),
            "calibration_ratio_p50": float(np.median(self.ratios)) if self.ratios else None,
        }

    @property
    def tail_factor(self) -> float:
        """scale / tail (<= 1): a step planned to end ``x`` seconds from now at the calibrated
        scale ends by then even at the tail ratio when planned for ``x * tail_factor``."""
        return self.scale / self.tail if self.tail > self.scale else 1.0

    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        t = self.base.batch_time_s(num_tokens, spec_steps, kv_read_tokens, attn_pairs, num_requests)
        return t * self.scale + self.offset_s

    def max_tokens_within_s(
        self, time_s: float, spec_steps: int = 0, kv_read_tokens: int = 0, num_requests: int = 0
    ) -> int:
        if time_s <= self.offset_s:
            return 0
        return self.base.max_tokens_within_s(
            (time_s - self.offset_s) / self.scale, spec_steps, kv_read_tokens, num_requests=num_requests
        )

    def shortest_step_s(self) -> float:
        return self.base.one_token_step_s() * min(self.low, 1.0)

    def shortest_run_s(self) -> tuple[int, float] | None:
        """(K, s): no K consecutive steps have taken less than ``s / one_token_step_s`` x their
        predicted time so far, so in particular less than K x s (None before K steps were
        observed): ``shortest_step_s`` for the steps of a run."""
        if self.low_run is None:
            return None
        return GROWTH_RUN_STEPS, self.base.one_token_step_s() * min(self.low_run, 1.0)
