"""Deadlines as the planner plans them: the SLO stretched by the attainment tolerance.

Attainment (metrics/attainment.py) allows each relative deadline a tolerance: the first token
by ``arrival + TTFT (1 + tol)``, token i by ``t0 + sum of TPOTs (1 + tol)`` with ``t0 = max(arrival
+ TTFT, first-token time)`` (t0 itself is not stretched). Planning against exactly those keeps
the guarantee for the measured SLO; ``tol = 0`` is the plain SLO (the default).

A request may also carry paced decode segments ``extra[PACE_KEY]`` (set once, when it is admitted;
``kv_pace`` in the config): the same segments with TPOTs no larger than the SLO's. The planner
then plans and forces its tokens by those earlier deadlines, so meeting them meets the SLO, and
the request finishes sooner, which is what the KV profile (planner/kvprofile.py) counts on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sloserve.core.request import Request, cumulative_tpot_s
from sloserve.core.slo import DecodeSegment

PACE_KEY = "sloserve_pace"  # Request.extra key of the paced decode segments fixed at admission
# Request.extra key of a resident's re-paced deadlines (planner/repace.py): (index, origin_s, tau_s),
# token j > index is then due by min(its planned deadline, origin_s + (j - index) * tau_s)
REPACE_KEY = "sloserve_repace"


def paced_segments(segments: tuple[DecodeSegment, ...], pace: float, floor_ms: float) -> tuple[DecodeSegment, ...]:
    """Each segment's TPOT times ``pace`` but not below ``floor_ms``, and never above the SLO's."""
    return tuple(replace(s, tpot_ms=min(s.tpot_ms, max(s.tpot_ms * pace, floor_ms))) for s in segments)


@dataclass(frozen=True)
class Deadlines:
    tolerance: float = 0.0

    def ttft_s(self, r: Request) -> float:
        """First-token deadline."""
        return r.arrival_s + r.ttft_slo_s * (1.0 + self.tolerance)

    def decode_origin_s(self, r: Request) -> float:
        """t0 of the decode deadlines (the earliest possible one while no token is out)."""
        t0 = r.arrival_s + r.ttft_slo_s
        return t0 if r.first_token_s is None else max(t0, r.first_token_s)

    def cumulative_tpot_s(self, r: Request, index: int) -> float:
        """Planned sum of the TPOTs of tokens 2..index (paced, then stretched by the tolerance)."""
        segs = r.extra.get(PACE_KEY)
        total = cumulative_tpot_s(segs, index) if segs else r.cumulative_tpot_s(index)
        return total * (1.0 + self.tolerance)

    def token_s(self, r: Request, index: int) -> float:
        if index <= 1:
            return self.ttft_s(r)
        t = self.decode_origin_s(r) + self.cumulative_tpot_s(r, index)
        rp = r.extra.get(REPACE_KEY)
        if rp is not None and index > rp[0]:
            t = min(t, rp[1] + (index - rp[0]) * rp[2])
        return t

    def next_token_s(self, r: Request) -> float:
        return self.token_s(r, r.num_output_tokens + 1)

    def min_tpot_s(self, r: Request) -> float:
        segs = r.extra.get(PACE_KEY) or r.segments
        tpot = (segs[0].tpot_ms if len(segs) == 1 else min(s.tpot_ms for s in segs)) / 1e3
        tpot *= 1.0 + self.tolerance
        rp = r.extra.get(REPACE_KEY)
        return tpot if rp is None else min(tpot, rp[2])
