"""Fabricated replica views for routing tests (helpers only, no tests): plain classes with can_admit and summary."""

from __future__ import annotations

from typing import Callable

from sloserve.core.plan import AdmitDecision, AdmitReason, ReplicaSummary
from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment


def make_request(
    i: int = 0,
    prompt: int = 100,
    output: int = 50,
    ttft_s: float = 1.0,
    tpot_ms: float = 100.0,
    slo_class: str = "chatbot",
    arrival_s: float = 0.0,
) -> Request:
    return Request(f"r{i}", arrival_s, prompt, output, ttft_s, (DecodeSegment(tpot_ms),), slo_class=slo_class)


class FakeView:
    """A replica as a router sees it. ``decide`` answers can_admit; every call is logged."""

    def __init__(
        self,
        replica_id: int,
        summary: ReplicaSummary | None = None,
        decide: AdmitDecision | Callable[[Request, float], AdmitDecision] | None = None,
    ) -> None:
        self.replica_id = replica_id
        self._summary = (
            summary
            if summary is not None
            else ReplicaSummary(replica_id, kv_capacity_tokens=100_000, free_kv_tokens=100_000)
        )
        self.decide = decide if decide is not None else AdmitDecision(AdmitReason.QUEUED)
        self.asked: list[str] = []

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        self.asked.append(request.request_id)
        return self.decide(request, now_s) if callable(self.decide) else self.decide

    def summary(self) -> ReplicaSummary:
        return self._summary

    def publish(self, summary: ReplicaSummary) -> None:
        self._summary = summary


class SummaryOnlyView(FakeView):
    """What the live ZMQ router / SGLang DP controller has: summaries, no can_admit."""

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        raise NotImplementedError("summary-only transport")


def admitted(slack_s: float) -> AdmitDecision:
    return AdmitDecision(AdmitReason.ADMITTED, slack_s=slack_s)


REFUSED = AdmitDecision(AdmitReason.NO_TIME)


def summary(rid: int, time_s: float = 0.0, outstanding: int = 0, requests: int = 0, **kw) -> ReplicaSummary:
    kw.setdefault("kv_capacity_tokens", 100_000)
    kw.setdefault("free_kv_tokens", 100_000)
    return ReplicaSummary(rid, time_s=time_s, num_requests=requests, outstanding_tokens=outstanding, **kw)
