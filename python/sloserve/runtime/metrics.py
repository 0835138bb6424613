"""Prometheus metrics of the HTTP front (a private registry per server, no global state).

``TierMetrics`` (sloserve's per-tier series) is shared with the SGLang plugin, so both backends
export the same names; the SGLang-named series of the embedded runtime are in sglang_metrics.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class TierMetrics:
    """sloserve's per-tier series: admissions, TTFT/TPOT by tier, finishes, SLOs met.

    ``registry=None`` registers nowhere: in the SGLang plugin prometheus-client then writes
    to SGLang's multiprocess directory, which SGLang's own ``/metrics`` reads."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.ttft = Histogram(
            "sloserve_ttft_seconds", "time to first token, by tier", ["tier"], buckets=_TTFT_BUCKETS, registry=r
        )
        self.tpot = Histogram(
            "sloserve_tpot_seconds",
            "mean time per output token after the first, by tier",
            ["tier"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.admissions = Counter(
            "sloserve_admissions_total",
            "admission outcomes (admitted, best_effort, rejected...)",
            ["outcome", "reason"],
            registry=r,
        )
        self.finished = Counter(
            "sloserve_requests_finished_total",
            "requests that ended, by tier and finish type",
            ["tier", "finish"],
            registry=r,
        )
        self.attained = Counter(
            "sloserve_slo_attained_total", "finished requests that met their SLO, by tier", ["tier"], registry=r
        )

    def admission(self, tier: str, reason: str, refused: bool) -> None:
        outcome = "rejected" if refused else ("best_effort" if tier == "best_effort" else "admitted")
        self.admissions.labels(outcome, reason).inc()

    def observe_finish(
        self, tier: str, finish: str, ttft_s: float | None, tpot_s: float | None, met: bool | None
    ) -> None:
        self.finished.labels(tier, finish).inc()
        if ttft_s is not None:
            self.ttft.labels(tier).observe(ttft_s)
        if tpot_s is not None:
            self.tpot.labels(tier).observe(tpot_s)
        if met:
            self.attained.labels(tier).inc()


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tiers = TierMetrics(r)
        self.admissions = self.tiers.admissions  # the front counts queue_full, client aborts... itself
        self.attainment = Gauge(
            "sloserve_slo_attainment", "fraction of finished SLO-tagged requests that met their SLO", registry=r
        )
        self.running = Gauge("sloserve_requests_in_flight", "requests the front is serving now", registry=r)
        self.tokens = Counter("sloserve_generated_tokens_total", "output tokens streamed", registry=r)
        self.prompt_tokens = Counter("sloserve_prompt_tokens_total", "prompt tokens received", registry=r)
        self.replicas_up = Gauge("sloserve_replicas_healthy", "scheduler processes alive", registry=r)
        self._done = 0
        self._met = 0

    def admission(self, tier: str, reason: str, refused: bool) -> None:
        self.tiers.admission(tier, reason, refused)

    def observe_finish(
        self,
        tier: str,
        finish: str,
        ttft_s: float | None,
        tpot_s: float | None,
        met: bool | None,
        completion_tokens: int,
    ) -> None:
        self.tiers.observe_finish(tier, finish, ttft_s, tpot_s, met)
        self.tokens.inc(completion_tokens)
        if met is not None:
            self._done += 1
            self._met += met
            self.attainment.set(self._met / self._done)

    def render(self) -> bytes:
        return generate_latest(self.registry)
