"""sloserve's per-tier Prometheus series inside SGLang's own ``/metrics``.

With ``--enable-metrics`` (the sloserve launcher adds it) SGLang runs prometheus-client in
multiprocess mode: each process writes its series under ``PROMETHEUS_MULTIPROC_DIR`` and the
HTTP server's ``/metrics`` merges them. A series the scheduler process creates is therefore
served beside SGLang's own (``sglang:num_queue_reqs``...), summed over DP ranks. The names and
labels are the embedded runtime's (``runtime.metrics.TierMetrics``), so dashboards read both
backends alike. Created only on the scheduler that logs SGLang's own metrics (first attention
TP rank), so a tensor-parallel group counts each request once.
"""

from __future__ import annotations


def metrics_enabled(scheduler) -> bool:
    """Whether this scheduler process reports SGLang's metrics (0.5.23's metrics reporter;
    0.5.16's ``enable_metrics`` on the first attention TP rank)."""
    reporter = getattr(scheduler, "metrics_reporter", None)
    if reporter is not None:
        return bool(getattr(reporter, "current_scheduler_metrics_enabled", False))
    return bool(getattr(scheduler, "enable_metrics", False)) and not getattr(scheduler, "attn_tp_rank", 0)


def finish_type(req) -> str:
    """SGLang's finish reason type (``length``, ``stop``, ``abort``), as the runtime labels it."""
    reason = getattr(req, "finished_reason", None)
    if reason is None:
        return "abort"
    return str(reason.to_json().get("type", "abort"))


class SchedulerTierMetrics:
    """Admissions and finishes of one scheduler, recorded into SGLang's multiprocess metrics."""

    def __init__(self) -> None:
        # imported here, in the scheduler process: prometheus-client must be imported after
        # SGLang set PROMETHEUS_MULTIPROC_DIR (the plugin module loads in SGLang's main process
        # before that, and an early import there would turn SGLang's own metrics single-process)
        from sloserve.runtime.metrics import TierMetrics

        self.series = TierMetrics(registry=None)

    def admission(self, tier: str, reason: str, refused: bool) -> None:
        self.series.admission(tier, reason, refused)

    def finished(self, report: dict, finish: str) -> None:
        """One ended request, from its final SLO report (``slo_report``: tier, ttft_ms...)."""
        ttft_ms, tpot_ms = report.get("ttft_ms"), report.get("tpot_ms")
        self.series.observe_finish(
            str(report.get("tier")),
            finish,
            None if ttft_ms is None else ttft_ms / 1e3,
            None if tpot_ms is None else tpot_ms / 1e3,
            report.get("slo_met"),
        )
