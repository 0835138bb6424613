"""Deadlines as the planner plans them: the SLO stretched by the attainment tolerance.

Attainment (metrics/attainment.py) allows each relative deadline a tolerance: the first token
by ``arrival + TTFT (1 + tol)``, token i by ``t0 + sum of TPOTs (1 + tol)`` with ``t0 = max(arrival
+ TTFT, first-token time)`` (t0 itself is not stretched). Planning against exactly those keeps
the guarantee for the measured SLO; ``tol = 0`` is the plain SLO (the default).

A resident may also have re-paced deadlines in the planner's table (``PlanTable.repace``,
planner/repace.py): never later than the ones above, so meeting them meets the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.request import Request
from sloserve.planner.table import PlanTable


@dataclass(frozen=True)
class Deadlines:
    tolerance: float = 0.0
    table: PlanTable = field(default_factory=PlanTable, compare=False, repr=False)

    def ttft_s(self, r: Request) -> float:
        """First-token deadline."""
        return r.arrival_s + r.ttft_slo_s * (1.0 + self.tolerance)

    def decode_origin_s(self, r: Request) -> float:
        """t0 of the decode deadlines (the earliest possible one while no token is out)."""
        t0 = r.arrival_s + r.ttft_slo_s
        return t0 if r.first_token_s is None else max(t0, r.first_token_s)

    def cumulative_tpot_s(self, r: Request, index: int) -> float:
        """Planned sum of the TPOTs of tokens 2..index (stretched by the tolerance)."""
        return r.cumulative_tpot_s(index) * (1.0 + self.tolerance)

    def slo_token_s(self, r: Request, index: int) -> float:
        """Deadline of output token ``index`` (1-based) by the SLO alone, without re-pacing."""
        if index <= 1:
            return self.ttft_s(r)
        return self.decode_origin_s(r) + self.cumulative_tpot_s(r, index)

    def token_s(self, r: Request, index: int) -> float:
        t = self.slo_token_s(r, index)
        if index <= 1:
            return t
        rp = self.table.repace.get(r.request_id)
        if rp is not None and index > rp.index:
            t = min(t, rp.origin_s + (index - rp.index) * rp.tau_s)
        return t

    def next_token_s(self, r: Request) -> float:
        return self.token_s(r, r.num_output_tokens + 1)

    def min_tpot_s(self, r: Request) -> float:
        segs = r.segments
        tpot = (segs[0].tpot_ms if len(segs) == 1 else min(s.tpot_ms for s in segs)) / 1e3
        tpot *= 1.0 + self.tolerance
        rp = self.table.repace.get(r.request_id)
        return tpot if rp is None else min(tpot, rp.tau_s)
