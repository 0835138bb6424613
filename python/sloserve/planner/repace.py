"""Re-pacing residents: tighten an admitted request's remaining deadlines to the executor's pace.

Admitted requests usually decode far ahead of their deadlines (short decode-only steps while
best effort yields to a busy KV pool), but the KV profile (planner/kvprofile.py) can only count
on a request being gone after its finish bound F = the deadline of its last planned token. At a
re-plan point (a completion) while KV binds, each decoding resident that is ahead gets an
override ``extra[REPACE_KEY] = (i, origin_s, tau_s)`` with ``i`` its tokens out: token ``j > i``
is then due by ``min(planned deadline, origin_s + (j - i) tau_s)`` (planner/deadlines.py), with
``tau_s >= L`` (one token per step suffices, L is unchanged) and ``origin_s`` a few steps ahead of
now. The deadlines only move earlier (meeting them meets the SLO), an override only ever
replaces a looser one (earlier admissions counted on the older F), and the whole batch is undone
unless the plan with no candidate stays feasible (the guarantee covers the new deadlines).
"""

from __future__ import annotations

from sloserve.planner.deadlines import REPACE_KEY
from sloserve.planner.execute import is_decoding


def tightens(new: tuple, old: tuple | None) -> bool:
    """Whether override ``new`` is nowhere later than ``old`` for the tokens both still cover."""
    if old is None:
        return True
    i, origin, tau = new
    oi, oorigin, otau = old
    return tau <= otau + 1e-12 and origin + tau <= oorigin + (i + 1 - oi) * otau + 1e-12


class Repacer:
    """The policy's side of re-pacing (a collaborator of SLOsServeScheduler, like KVProfile)."""

    def __init__(self, scheduler) -> None:
        self.s = scheduler

    def kv_binds(self, now_s: float) -> bool:
        s = self.s
        if s.reserved_kv_binds():
            return True
        cap = s.kv.capacity_blocks
        if s.config.kv_profile and s.config.output_length != "predict":
            return cap - s.kvp.free_blocks(now_s) > s.config.repace_above * cap
        return False

    def on_replan_point(self, now_s: float) -> int:
        """Re-pace the residents that are ahead; returns how many were re-paced (0 if undone)."""
        s = self.s
        L = s.step_len_s
        if L is None or not s.slo or s.inflight or not self.kv_binds(now_s):
            return 0
        tau = L * s.config.repace_tau
        origin = now_s + s.config.repace_slack_steps * L
        old: dict[str, tuple | None] = {}
        for r in s.slo.values():
            if not is_decoding(r):
                continue
            n, i = s.planned_output(r), r.num_output_tokens
            if n - i < 2:
                continue
            new = (i, origin, tau)
            prev = r.extra.get(REPACE_KEY)
            if not tightens(new, prev):
                continue
            f_old = s.dl.token_s(r, n)
            if origin + (n - i) * tau >= f_old - s.config.repace_min_gain_steps * L:
                continue  # not ahead enough to be worth it
            old[r.request_id] = prev
            r.extra[REPACE_KEY] = new
        if not old:
            return 0
        self._invalidate(old)
        res, _, _ = s.plan([], now_s)
        if res.feasible:
            s.reasons["repaced"] += len(old)
            return len(old)
        for rid, prev in old.items():
            r = s.slo[rid]
            if prev is None:
                r.extra.pop(REPACE_KEY, None)
            else:
                r.extra[REPACE_KEY] = prev
        self._invalidate(old)
        s.reasons["repace_undone"] += 1
        return 0

    def _invalidate(self, rids) -> None:
        self.s._view = None
        self.s.kvp.invalidate(rids)
