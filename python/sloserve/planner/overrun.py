"""Overruns of a planned output length (``output_length`` predict or learn).

A request about to outrun its planned length gets a longer plan (predict: double; learn: the
conditional quantile, planner/lengths.py) if the KV fits and (learn) the admitted plan stays
feasible with it; otherwise it is demoted to best effort, so the admitted rest keep their
guarantee (docs/planner.md §5).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from sloserve.core.request import Request
from sloserve.planner.lengths import LengthPlanner
from sloserve.planner.state import TierState


class OverrunTracker:
    def __init__(
        self,
        kv_profile: bool,
        tiers: TierState,
        lengths: LengthPlanner,
        kvp,
        feasible: Callable[[float], bool],
        reasons: Counter,
    ) -> None:
        self.learn = lengths.mode == "learn"
        self.profile = self.learn and kv_profile  # KV checked on the time profile, not the sum
        self.tiers, self.lengths, self.kvp, self.feasible, self.reasons = tiers, lengths, kvp, feasible, reasons

    def after_step(self, now_s: float) -> None:
        tiers, learn, profile = self.tiers, self.learn, self.profile
        kv = tiers.kv
        for r in list(tiers.slo.values()):
            planned = self.lengths.planned_output(r)
            if r.output_tokens_known or r.num_output_tokens < planned - 1:
                continue
            cap = r.max_new_tokens if r.max_new_tokens is not None else r.output_tokens
            if learn and planned >= cap:
                continue  # planned up to its limit: it cannot outrun it
            new = self.lengths.extend(r, planned, cap)
            old_blocks = tiers.reserved[r.request_id]
            extra = kv.blocks_for(r.prompt_tokens + new) - old_blocks
            self.reasons["length_overrun"] += 1
            if profile or tiers.reserved_total + extra <= kv.capacity_blocks:
                old = self.lengths.table.pred.get(r.request_id)
                self._set(r, new, old_blocks + extra)
                if profile and self.kvp.peak_above(kv.capacity_blocks, now_s):
                    self._set(r, old, old_blocks)  # its later finish would overfill the KV pool
                elif not learn or self.feasible(now_s):
                    continue
                else:
                    self._set(r, old, old_blocks)  # the longer plan would break an admitted deadline
                    if not self.feasible(now_s):  # ... unless the plan was infeasible anyway
                        self._set(r, new, old_blocks + extra)
                        continue
            self.reasons["overrun_demoted"] += 1
            tiers.demote(r, now_s, "overrun")
        tiers.clear_step_len_if_empty()

    def _set(self, r: Request, pred: int | None, blocks: int) -> None:
        self.lengths.set_planned(r.request_id, pred)
        self.tiers.resize(r.request_id, blocks)
        self.kvp.invalidate([r.request_id])  # its size and finish bound moved
