"""Deadlines as the planner plans them: the SLO stretched by the attainment tolerance.

Attainment (metrics/attainment.py) allows each relative deadline a tolerance: the first token
by ``arrival + TTFT (1 + tol)``, token i by ``t0 + sum of TPOTs (1 + tol)`` with ``t0 = max(arrival
+ TTFT, first-token time)`` (t0 itself is not stretched). Planning against exactly those keeps
the guarantee for the measured SLO; ``tol = 0`` is the plain SLO (the default).
"""

from __future__ import annotations

from dataclasses import dataclass

from sloserve.core.request import Request


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

    def token_s(self, r: Request, index: int) -> float:
        if index <= 1:
            return self.ttft_s(r)
        return self.decode_origin_s(r) + r.cumulative_tpot_s(index) * (1.0 + self.tolerance)

    def next_token_s(self, r: Request) -> float:
        return self.token_s(r, r.num_output_tokens + 1)

    def min_tpot_s(self, r: Request) -> float:
        return r.min_tpot_s * (1.0 + self.tolerance)
