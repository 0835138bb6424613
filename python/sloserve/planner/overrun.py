"""Overruns of a planned output length (``output_length`` predict or learn).

A request about to outrun its planned length gets a longer plan (predict: double; learn: the
conditional quantile, planner/lengths.py) if the KV fits and (learn) the admitted plan stays
feasible with it; in learn mode, when that does not fit, the longest shorter extension that does
(``overrun_step_down``); otherwise it is demoted to best effort, so the admitted rest keep their
guarantee (docs/planner.md §5). A request demoted so is still served; once a plan for it fits
again it comes back to the SLO tier (``overrun_readmit``), if every token it emitted in between
met its deadline: from then on the plan guarantees it like any admitted request.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from sloserve.core.request import Request
from sloserve.planner.execute import is_decoding
from sloserve.planner.lengths import LengthPlanner
from sloserve.planner.state import TierState


class OverrunTracker:
    def __init__(
        self, cfg, tiers: TierState, lengths: LengthPlanner, kvp, feasible: Callable[[float], bool], reasons: Counter
    ) -> None:
        self.learn = lengths.mode == "learn"
        self.step_down = self.learn and cfg.overrun_step_down
        self.readmit = self.learn and cfg.overrun_readmit
        # demoted for an overrun and on time since: id -> (request, tokens out when last checked)
        self.demoted: dict[str, tuple[Request, int]] = {}
        self.profile = self.learn and cfg.kv_profile  # KV checked on the time profile, not the sum
        self.tiers, self.lengths, self.kvp, self.feasible, self.reasons = tiers, lengths, kvp, feasible, reasons

    def after_step(self, now_s: float) -> None:
        tiers = self.tiers
        for r in list(tiers.slo.values()):
            planned = self.lengths.planned_output(r)
            if r.output_tokens_known or r.num_output_tokens < planned - 1:
                continue
            cap = self._cap(r)
            if self.learn and planned >= cap:
                continue  # planned up to its limit: it cannot outrun it
            self.reasons["length_overrun"] += 1
            if not self._extend(r, self.lengths.extend(r, planned, cap), now_s):
                self.reasons["overrun_demoted"] += 1
                tiers.demote(r, now_s, "overrun")
                if self.readmit:
                    self.demoted[r.request_id] = (r, r.num_output_tokens)
        if self.demoted:
            self._readmit(now_s)
        tiers.clear_step_len_if_empty()

    def _readmit(self, now_s: float) -> None:
        """Bring back the requests demoted for an overrun whose tokens since were all on time,
        each with the longest plan ``_extend`` finds (down to its next token); one that fits
        nowhere stays best effort, in its place, and is tried again after the next step."""
        tiers, dl = self.tiers, self.tiers.dl
        for rid, (r, seen) in list(self.demoted.items()):
            n = r.num_output_tokens
            late = n > seen and dl.slo_token_s(r, seen + 1) < now_s  # its earliest new token's
            if tiers.be.get(rid) is not r or late:
                del self.demoted[rid]  # finished, aborted, or a miss already
                continue
            self.demoted[rid] = (r, n)
            cap = self._cap(r)
            if n + 1 > cap or not is_decoding(r) or tiers.kv.held_blocks(rid) == 0:
                continue  # preempted (recomputing): not until it decodes again
            pred = self.lengths.table.pred.get(rid)
            self.lengths.set_planned(rid, n + 1)
            tiers.admit(r, lambda _r: None)  # still in the best-effort tier's order meanwhile
            self.kvp.invalidate([rid])
            if self._extend(r, self.lengths.extend(r, n + 1, cap), now_s, strict=True):
                del self.demoted[rid]
                tiers.rejoin(r, now_s, "readmitted")
                self.reasons["overrun_readmitted"] += 1
            else:
                tiers.unadmit(r)
                self.lengths.set_planned(rid, pred)
                self.kvp.invalidate([rid])

    @staticmethod
    def _cap(r: Request) -> int:
        """The most output tokens ``r`` may have: its ``max_new_tokens``, else its true length."""
        return r.max_new_tokens if r.max_new_tokens is not None else r.output_tokens

    def _longer(self, r: Request, new: int):
        """The plans tried for an outrunning request, longest first: the predictor's, then (learn,
        ``overrun_step_down``) half as far past its current length, a quarter, ... down to one
        token. A shorter extension that fits keeps the request admitted; most outrunning requests
        finish soon after their planned length, and a request that outruns the shorter one is
        checked again then (docs/planner.md §5)."""
        yield new
        if self.step_down:
            done = r.num_output_tokens
            ext = (new - done) // 2
            while ext >= 1:
                yield done + ext
                ext //= 2

    def _extend(self, r: Request, new: int, now_s: float, strict: bool = False) -> bool:
        """Give ``r`` the longest of ``_longer`` that fits the KV pool and (learn) keeps the admitted
        plan feasible; False when none does (``r`` is to be demoted, its plan unchanged). An
        admitted request keeps a plan that breaks feasibility when the plan without it is
        infeasible anyway; a request coming back (``strict``) never does."""
        tiers, kv = self.tiers, self.tiers.kv
        old, old_blocks = self.lengths.table.pred.get(r.request_id), tiers.reserved[r.request_id]
        for n in self._longer(r, new):
            blocks = kv.blocks_for(r.prompt_tokens + n)
            if not self.profile and tiers.reserved_total + blocks - old_blocks > kv.capacity_blocks:
                continue
            self._set(r, n, blocks)
            if self.profile and self.kvp.peak_above(kv.capacity_blocks, now_s):
                self._set(r, old, old_blocks)  # its later finish would overfill the KV pool
                continue
            if not self.learn or self.feasible(now_s):
                return True
            self._set(r, old, old_blocks)  # the longer plan would break an admitted deadline
            if not strict and not self.feasible(now_s):  # ... unless the plan was infeasible anyway
                self._set(r, n, blocks)
                return True
        return False

    def _set(self, r: Request, pred: int | None, blocks: int) -> None:
        self.lengths.set_planned(r.request_id, pred)
        self.tiers.resize(r.request_id, blocks)
        self.kvp.invalidate([r.request_id])  # its size and finish bound moved
