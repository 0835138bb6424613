"""Re-pacing residents: tighten an admitted request's remaining deadlines to the executor's pace.

Admitted requests usually decode far ahead of their deadlines (short decode-only steps while
best effort yields to a busy KV pool), but the KV profile (planner/kvprofile.py) can only count
on a request being gone after its finish bound F = the deadline of its last planned token. At a
re-plan point (a completion) while KV binds, each decoding resident that is ahead gets an
override ``PlanTable.repace[id] = Repace(i, origin_s, tau_s)`` with ``i`` its tokens out: token ``j > i``
is then due by ``min(planned deadline, origin_s + (j - i) tau_s)`` (planner/deadlines.py), with
``tau_s >= L`` (one token per step suffices, L is unchanged) and ``origin_s`` a few steps ahead of
now. The deadlines only move earlier (meeting them meets the SLO), an override only ever
replaces a looser one (earlier admissions counted on the older F), and the whole batch is undone
unless the plan with no candidate stays feasible (the guarantee covers the new deadlines).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from sloserve.planner.execute import is_decoding
from sloserve.planner.table import PlanTable, Repace


def tightens(new: tuple, old: tuple | None) -> bool:
    """Whether override ``new`` is nowhere later than ``old`` for the tokens both still cover."""
    if old is None:
        return True
    i, origin, tau = new
    oi, oorigin, otau = old
    return tau <= otau + 1e-12 and origin + tau <= oorigin + (i + 1 - oi) * otau + 1e-12


class Repacer:
    """Re-pacing at re-plan points: writes overrides into the planner's table, keeps them only
    when ``feasible(now_s)`` (the policy's plan with no candidate) holds with them."""

    def __init__(
        self, config, tiers, table: PlanTable, kvp, lengths, feasible: Callable[[float], bool], reasons: Counter
    ):
        self.config, self.tiers, self.table, self.kvp, self.lengths = config, tiers, table, kvp, lengths
        self.feasible, self.reasons = feasible, reasons
        self._refused = (0, 0)  # arrivals sent to best effort for KV and for time, at the last look
        self._kv_refuses = True  # which of the two refused more since then (kept while none was refused)

    def kv_refuses(self) -> bool:
        """Whether KV, rather than time, is what refuses arrivals lately: re-pacing buys KV with
        step time (a resident paced one token per step is a forced decode in every step), so
        where arrivals are refused for time it refuses more of them (mixed, hidden lengths: 31
        refused for time with it against 11 without, capacity -13%)."""
        now = (self.reasons["best_effort_no_kv"], self.reasons["best_effort_no_time"])
        kv, time = now[0] - self._refused[0], now[1] - self._refused[1]
        self._refused = now
        if kv or time:
            self._kv_refuses = kv >= time
        return self._kv_refuses

    def kv_binds(self, now_s: float) -> bool:
        if self.tiers.reserved_kv_binds():
            return True
        cap = self.tiers.kv.capacity_blocks
        if self.kvp.enabled:
            return self.kvp.peak_above(self.config.repace_above * cap, now_s)
        return False

    def on_replan_point(self, now_s: float) -> int:
        """Re-pace the residents that are ahead; returns how many were re-paced (0 if undone)."""
        tiers, cfg, dl = self.tiers, self.config, self.kvp.dl
        L = tiers.step_len_s
        if L is None or not tiers.slo or tiers.inflight or not self.kv_refuses() or not self.kv_binds(now_s):
            return 0
        # one token per L: a step planned at L runs shorter on average (the model is scaled at a
        # high quantile, planner/calibrate.py), and the step that a due decode ends is sized to
        # end by it at the calibration's tail (planner/executor.py). ``repace_tail`` also divides
        # the pace by the tail factor (the default before stop 31): 25% looser under 10% noise,
        # the KV profile counted re-paced finishes that much later
        tail = getattr(self.kvp.ctx.perf, "tail_factor", 1.0) if cfg.repace_tail else 1.0
        tau = L * cfg.repace_tau / tail
        origin = now_s + cfg.repace_slack_steps * L
        old: dict[str, Repace | None] = {}
        for r in tiers.slo.values():
            if not is_decoding(r):
                continue
            n, i = self.lengths.planned_output(r), r.num_output_tokens
            if n - i < 2:
                continue
            new = Repace(i, origin, tau)
            prev = self.table.repace.get(r.request_id)
            if not tightens(new, prev):
                continue
            f_old = dl.token_s(r, n)
            if origin + (n - i) * tau >= f_old - cfg.repace_min_gain_steps * L:
                continue  # not ahead enough to be worth it
            old[r.request_id] = prev
            self.table.repace[r.request_id] = new
        if not old:
            return 0
        self._invalidate(old)
        if self.feasible(now_s):
            self.reasons["repaced"] += len(old)
            return len(old)
        for rid, prev in old.items():
            if prev is None:
                self.table.repace.pop(rid, None)
            else:
                self.table.repace[rid] = prev
        self._invalidate(old)
        self.reasons["repace_undone"] += 1
        return 0

    def release(self) -> int:
        """Drop every override (the admitted plan is infeasible): re-paced deadlines are the
        planner's own, and a plan that cannot meet them would put forced decodes of ahead
        residents before admitted prompts near their TTFT (mixed at 4 replicas with speculation,
        paper mode: 36 admitted misses at 30 rps with them kept). The SLO's deadlines come back;
        returns how many were dropped."""
        rids = list(self.table.repace)
        if rids:
            self.table.repace.clear()
            self._invalidate(rids)
            self.reasons["repace_released"] += len(rids)
        return len(rids)

    def _invalidate(self, rids) -> None:
        self.tiers.invalidate()
        self.kvp.invalidate(rids)
