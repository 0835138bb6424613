"""The embedded runtime's Prometheus series under SGLang 0.5.23's names and labels.

So that dashboards and gateways written for SGLang read a sloserve server unchanged: llm-d and
the Gateway API inference extension's endpoint picker scrape ``sglang:num_queue_reqs``,
``sglang:num_running_reqs`` and ``sglang:token_usage``; SGLang's Grafana dashboard plots the
latency histograms. They sit beside sloserve's own ``sloserve_*`` series in one registry.

Scheduler-side gauges (one series per replica, SGLang's scheduler labels) are computed at
scrape time from ``LoadTracker``; request-side series (SGLang's tokenizer labels) are observed
as each request ends.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# SGLang 0.5.23's default buckets (metrics_collector.py), so le= labels match its dashboards
TTFT_BUCKETS_S = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS_S = TTFT_BUCKETS_S + (600, 1200, 1800, 2400)
ITL_BUCKETS_S = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0, 6.0, 8.0,
)  # fmt: skip
ENGINE_TYPE = "unified"  # SGLang's value outside prefill/decode disaggregation

# (SGLang name, LoadSnapshot field, help)
SCHEDULER_GAUGES = (
    ("sglang:num_running_reqs", "num_running_reqs", "The number of running requests."),
    ("sglang:num_queue_reqs", "num_waiting_reqs", "The number of requests in the waiting queue."),
    ("sglang:token_usage", "token_usage", "The token usage (fraction of the KV pool in use)."),
    ("sglang:num_used_tokens", "num_used_tokens", "The number of used tokens."),
    ("sglang:max_total_num_tokens", "max_total_num_tokens", "Maximum total number of tokens in the KV cache pool."),
    ("sglang:gen_throughput", "gen_throughput", "The generation throughput (token/s)."),
    ("sglang:cache_hit_rate", "cache_hit_rate", "The prefix cache hit rate."),
)


def scheduler_labels(model_name: str, dp_rank: int, dp_size: int) -> dict[str, str]:
    """SGLang's scheduler labels; ``dp_rank`` only with data parallelism, as SGLang does."""
    labels = {"model_name": model_name, "engine_type": ENGINE_TYPE, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
    if dp_size > 1:
        labels["dp_rank"] = str(dp_rank)
    return labels


class SchedulerGauges:
    """A prometheus-client collector: SGLang's per-scheduler gauges from ``snapshot()``."""

    def __init__(self, model_name: str, dp_size: int, snapshot: Callable[[], list[dict]]) -> None:
        self.model_name = model_name
        self.dp_size = dp_size
        self.snapshot = snapshot

    def collect(self):
        loads = self.snapshot()
        label_names = list(scheduler_labels(self.model_name, 0, self.dp_size))
        for name, field, doc in SCHEDULER_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=label_names)
            for load in loads:
                labels = scheduler_labels(self.model_name, load["dp_rank"], self.dp_size)
                family.add_metric(list(labels.values()), float(load[field]))
            yield family


class BulkHistogram:
    """A histogram fed many values at once (every inter-token gap of a request at its end: one
    ``Histogram.observe`` per token would cost the event loop milliseconds per long request)."""

    def __init__(self, name: str, doc: str, labels: dict[str, str], buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.bounds = np.asarray(buckets, dtype=float)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        if values.size:
            idx = np.searchsorted(self.bounds, values, side="left")  # le: value <= bound
            self.counts += np.bincount(idx, minlength=self.counts.size)
            self.total += float(values.sum())

    def collect(self):
        family = HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
        cumulative = np.cumsum(self.counts)
        buckets = [(floatToGoString(b), int(c)) for b, c in zip(self.bounds, cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        family.add_metric(list(self.labels.values()), buckets, self.total)
        yield family


def chunk_gaps_s(token_times: list[float]) -> np.ndarray:
    """SGLang's inter-token latencies: each chunk of tokens after the first one contributes
    (time since the previous chunk) / (tokens in it), once per token."""
    t = np.asarray(token_times, dtype=float)
    if t.size < 2:
        return np.empty(0)
    starts = np.flatnonzero(t[1:] != t[:-1]) + 1  # first token of each later chunk
    sizes = np.diff(np.append(starts, t.size))
    return np.repeat((t[starts] - t[starts - 1]) / sizes, sizes)


class SglangRequestMetrics:
    """SGLang's tokenizer-side series, observed when a request ends (``request_done`` is a
    ``RequestLog`` observer): counts, TTFT, inter-token latency, end-to-end latency."""

    def __init__(self, registry: CollectorRegistry, model_name: str) -> None:
        self.labels = {"model_name": model_name, "engine_type": ENGINE_TYPE}
        names = list(self.labels)
        streamed = [*names, "is_streaming"]
        r = registry
        self.prompt_tokens = Counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed.", streamed, registry=r
        )
        self.generation_tokens = Counter(
            "sglang:generation_tokens_total", "Number of generation tokens processed.", streamed, registry=r
        )
        self.requests = Counter("sglang:num_requests_total", "Number of requests processed.", streamed, registry=r)
        self.aborted = Counter("sglang:num_aborted_requests_total", "Number of requests aborted.", names, registry=r)
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            streamed,
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            streamed,
            buckets=E2E_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            "sglang:request_time_per_output_token_seconds",
            "Per-request TPOT in seconds: (finished_time - first_token_time) / (completion_tokens - 1).",
            streamed,
            buckets=ITL_BUCKETS_S,
            registry=r,
        )
        self.itl = BulkHistogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            self.labels,
            ITL_BUCKETS_S,
        )
        registry.register(self.itl)

    def request_done(self, state, reason: dict, status: int) -> None:
        if status and reason.get("type") == "abort":
            self.aborted.labels(**self.labels).inc()
        if status and not state.visible:
            return  # refused or failed before any token: SGLang counts no finished request either
        stream = {**self.labels, "is_streaming": "true" if state.gen.stream else "false"}
        self.requests.labels(**stream).inc()
        self.prompt_tokens.labels(**stream).inc(len(state.prompt_ids))
        self.generation_tokens.labels(**stream).inc(state.visible)
        if state.ttft_s is not None:
            self.ttft.labels(**stream).observe(state.ttft_s)
        if state.tpot_s is not None:
            self.tpot.labels(**stream).observe(state.tpot_s)
        if state.finish_s is not None:
            self.e2e.labels(**stream).observe(state.finish_s - state.request.arrival_s)
        self.itl.observe_many(chunk_gaps_s(state.token_times[: state.visible]))
