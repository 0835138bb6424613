"""Per-step predicted and observed times of the plugin's replica, as a profile CSV (no sglang import).

With ``SLOSERVE_SGLANG_STEP_LOG`` set to a directory, each scheduler process appends one row per
SGLang iteration that did work to ``steps-<replica>-<pid>.csv`` (TP ranks of one replica write
the same steps, each its own file): the step's shape as the shadow
restated it (tokens computed, KV read, items), the planner's predicted time (the unscaled
batch-time model), the wall time observed (what the calibration learns from), and the
calibration scale at that moment. The columns ``num_tokens``, ``kv_read_tokens`` and ``time_ms``
are what ``scripts/fit_perf_model.py`` reads, so a serving run is also a profile of the engine as
it serves (scheduler loop and IPC included); benchmark/real_vs_sim.py uses it both ways.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from sloserve.core.plan import StepPlan
from sloserve.perf.base import plan_shape

ENV_STEP_LOG = "SLOSERVE_SGLANG_STEP_LOG"
COLUMNS = ("time_s", "num_tokens", "kv_read_tokens", "num_items", "prefill_tokens", "predicted_ms", "time_ms", "scale")
FLUSH_EVERY_S = 0.5  # rows reach the file this often (a killed server loses at most this much)


def step_log_path(directory: str | os.PathLike, replica_id: int) -> Path:
    return Path(directory) / f"steps-{int(replica_id)}-{os.getpid()}.csv"


class StepLog:
    """Called as the shadow's ``step_sink(plan, observed_s, now_s)``; ``scale()`` is the
    calibration scale at that moment."""

    def __init__(self, path: str | os.PathLike, perf, scale: Callable[[], float] = lambda: 1.0) -> None:
        self.perf = perf
        self.scale = scale
        self.path = Path(path)
        new = not self.path.exists()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while serving
        if new:
            self._fh.write(",".join(COLUMNS) + "\n")
        self._flushed_s = 0.0

    def __call__(self, plan: StepPlan, observed_s: float, now_s: float) -> None:
        num_tokens, _, kv_read, _, _ = plan_shape(plan.items, plan.spec_steps)
        if num_tokens <= 0:  # only requests that left: the step's shape is unknown, no profile row
            return
        scale = self.scale()
        prefill = sum(i.num_tokens for i in plan.items if i.num_tokens > 1)
        predicted_ms = self.perf.plan_time_s(plan) * 1e3
        row = (now_s, num_tokens, kv_read, len(plan.items), prefill, predicted_ms, observed_s * 1e3, scale)
        self._fh.write("%.6f,%d,%d,%d,%d,%.4f,%.4f,%.4f\n" % row)
        if now_s - self._flushed_s >= FLUSH_EVERY_S:
            self._flushed_s = now_s
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()
