"""Wall-clock step times in the embedded runtime, fed to the planner's online calibration.

The simulated-wall engine sleeps for the model's step time, but a step really lasts from the
moment the scheduler starts planning it (or from the end of the previous step, when the loop
runs back to back) until its tokens exist: planning, admission of new arrivals, answering the
router, message handling and the sleep's overshoot all delay the next token, and on a loaded
machine by far more than the model says (first-request TTFTs of 71-192 ms against a 33 ms
model prefill). ``StepTimer`` measures that span and restates the engine's ``StepResult`` with
it, so the policy's calibrator (planner/calibrate.py, the same one the simulator and the SGLang
shadow feed) scales the planner's model by what steps really take. It keeps the ratios
observed / predicted for ``/server_info`` whether or not the policy learns from them.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np

from sloserve.core.plan import StepPlan, StepResult
from sloserve.core.scheduler import SCHEDULERS

RATIO_WINDOW_STEPS = 512  # the calibrator's default window: /server_info describes the same span
# What the SGLang plugin sets unless the user did: a real engine's step pays a fixed cost (the
# serving loop, the host preempting the engine) whatever its size, which the affine form learns
# as an offset; a multiplier fitted to it ran to its cap live (docs/perf_model.md, "Closing the
# loop"). The simulator's synthetic noise and the embedded runtime's simulated engine
# (--time-scale) are proportional and keep "scale". SGLang decodes every running request in
# each decode batch, best effort included, whatever the plan: the plugin plans them as forced.
# A live step's p99 is twice its median on a shared host: planned at its p99 (the simulator's
# 0.99) every step took twice its time, a chunk no longer fit beside three decodes within the
# TPOT and the server refused requests at a tenth of its capacity (1.2 rps); planned at its p80,
# the tail is absorbed by the slack cumulative deadlines bank (12.5 rps, admitted attainment
# 0.991; docs/perf_model.md, "Planning at the p80").
# Its tail for deadline-ending steps (calibrate_tail_quantile) stays off: at the p95 it did not
# reduce the admitted misses of a 2-core host at 1.6x its capacity (docs/perf_model.md, run N).
LIVE_POLICY_DEFAULTS = {
    "calibrate_form": "affine",
    "calibrate_quantile": 0.8,
    "calibrate_tail_quantile": 0.0,
    "best_effort_decodes_forced": True,
    # live servers were measured reserving max_new_tokens (issue 16); the learned lengths are
    # the simulator's default (issue 15), not yet served live
    "output_length": "reserve",
    # so is the KV growth counted from observation (planner/growth.py, stop 34): measured in the
    # simulator only; served live, the profile keeps the physical growth bound
    "kv_growth_calibrate": False,
}
# The embedded runtime keeps the single 0.99 quantile it was measured with under contention
# (docs/runtime.md): the planner's 0.9 + 0.9999 tail was chosen on the simulator's proportional
# noise, and a host stall in the window would make the tail (a window's maximum) its cap.
EMBEDDED_POLICY_DEFAULTS = {
    "calibrate_quantile": 0.99,
    "calibrate_tail_quantile": 0.0,
    "output_length": "reserve",
    "kv_growth_calibrate": False,
}


def live_policy_options(
    policy: str, options: Mapping[str, Any], defaults: Mapping[str, Any] = LIVE_POLICY_DEFAULTS
) -> dict[str, Any]:
    """``options`` with ``defaults`` for the keys the policy has and the user left unset."""
    fields = {f.name for f in dataclasses.fields(SCHEDULERS.get(policy).Config)}
    return {**{k: v for k, v in defaults.items() if k in fields}, **options}


def policy_options_with_calibration(policy: str, options: Mapping[str, Any], enabled: bool) -> dict[str, Any]:
    """The policy's options with its ``calibrate`` switch off when the server's is off (a
    policy without calibration is left as it is)."""
    out = dict(options)
    fields = {f.name for f in dataclasses.fields(SCHEDULERS.get(policy).Config)}
    if not enabled and "calibrate" in fields:
        out["calibrate"] = False
    return out


class StepTimer:
    """``begin`` before a step is planned, ``end`` once its wall time has passed, ``idle`` when
    the loop found nothing to run (the next step then starts at its own planning)."""

    def __init__(self, perf, feed: bool, time_scale: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.perf = perf  # the planner's model, unscaled: what the policy predicts
        self.feed = feed and time_scale > 0  # a zero-time engine has no step time worth learning
        self.clock = clock
        self.ratios: deque = deque(maxlen=RATIO_WINDOW_STEPS)
        self.steps_timed = 0
        self.prev_end: float | None = None
        self.start: float | None = None

    def begin(self) -> None:
        now = self.clock()
        self.start = self.prev_end if self.prev_end is not None else now

    def idle(self) -> None:
        self.prev_end = None

    def end(self, plan: StepPlan, result: StepResult, learn: bool = True) -> StepResult:
        """The result as the policy should see it: ``step_s`` the observed wall time when
        calibration is fed, 0 (the calibrator skips the step) when ``learn`` is False."""
        now = self.clock()
        observed_s = now - (self.start if self.start is not None else now)
        self.prev_end = now
        if not learn:
            return dataclasses.replace(result, step_s=0.0)
        predicted_s = self.perf.plan_time_s(plan)
        if predicted_s > 0 and observed_s > 0:
            self.ratios.append(observed_s / predicted_s)
            self.steps_timed += 1
        return dataclasses.replace(result, step_s=observed_s) if self.feed else result

    def stats(self, policy_stats: dict) -> dict:
        """Flat keys for the replica's stats (``/server_info`` internal_states), given the
        policy's ``stats()`` (a calibrating policy reports ``calibration_scale`` there)."""
        out = {
            "calibration_enabled": "calibration_scale" in policy_stats,
            "calibration_scale": float(policy_stats.get("calibration_scale", 1.0)),
            "calibration_offset_ms": float(policy_stats.get("calibration_offset_ms", 0.0)),
            "steps_timed": self.steps_timed,
        }
        if self.ratios:
            arr = np.fromiter(self.ratios, dtype=np.float64)
            p50, p90, p99 = np.quantile(arr, (0.5, 0.9, 0.99))
            out.update(step_ratio_p50=float(p50), step_ratio_p90=float(p90), step_ratio_p99=float(p99))
        return out
