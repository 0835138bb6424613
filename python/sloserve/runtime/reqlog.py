"""What the embedded server logs about its traffic: one structured line per request that ends
(finished, rejected with 429, aborted, failed) and a periodic throughput/queue line, like
SGLang's "Decode batch" lines. ``--log-format json`` makes every log line one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # the config imports this module for its constants: keep it light
    from sloserve.runtime.state import ReqState

req_log = logging.getLogger("sloserve.requests")
stats_log = logging.getLogger("sloserve.stats")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s %(name)s] %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus a record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})  # no field is named like the four above
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """The level and line format of every handler on the root logger (one stderr handler
    when there is none yet); uvicorn's loggers propagate to it."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level.upper())


def _event(reason: dict, status: int) -> str:
    if status == 0:
        return "finished"
    if status == 429:
        return "rejected"
    return "aborted" if reason.get("type") == "abort" else "failed"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def request_fields(state: ReqState, reason: dict, status: int) -> dict:
    """The structured record of one ended request (``verdict``: met, missed, or n/a when the
    request was not served to the end)."""
    verdict = "n/a" if state.slo_met is None else ("met" if state.slo_met else "missed")
    fields = {
        "event": _event(reason, status),
        "rid": state.client_rid,
        "tier": state.tier,
        "admission": state.reason,
        "replica": state.replica,
        "status": status or 200,
        "finish": reason.get("type"),
        "prompt_tokens": len(state.prompt_ids),
        "completion_tokens": state.visible,
        "ttft_ms": _ms(state.ttft_s),
        "tpot_ms": _ms(state.tpot_s),
        "verdict": verdict,
        "slo_class": state.request.slo_class,
    }
    if reason.get("message"):
        fields["detail"] = reason["message"]
    return fields


def _text(fields: dict) -> str:
    """key=value pairs; a value with a space is quoted, so the line splits back unambiguously."""
    return " ".join(
        f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}"
        for k, v in fields.items()
        if k != "event" and v is not None
    )


class RequestLog:
    """Counts ended requests and logs them; ``periodic`` logs throughput every ``interval_s``."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.ended = 0
        self.met = 0
        self.rejected = 0
        self.done_tokens = 0
        # told of every ended request too: the gateway view's token tallies and SGLang-named series
        self.observers: list[Callable[[ReqState, dict, int], None]] = []

    def request_done(self, state: ReqState, reason: dict, status: int) -> None:
        for observe in self.observers:
            observe(state, reason, status)
        fields = request_fields(state, reason, status)
        self.ended += 1
        self.met += fields["verdict"] == "met"
        self.rejected += fields["event"] == "rejected"
        self.done_tokens += state.num_out
        level = logging.INFO if fields["event"] in ("finished", "rejected", "aborted") else logging.WARNING
        req_log.log(level, "request %s %s", fields["event"], _text(fields), extra={"fields": fields})

    def stats_fields(
        self, in_flight: Iterable[ReqState], replica_stats: dict[int, dict], dt_s: float, last: dict
    ) -> dict:
        """Throughput since the ``last`` call's counters (updated in place) and the queues now."""
        states = list(in_flight)
        produced = self.done_tokens + sum(s.num_out for s in states)
        used = sum(s.get("kv_used_blocks", 0) for s in replica_stats.values())
        cap = sum(s.get("kv_capacity_blocks", 0) for s in replica_stats.values())
        fields = {
            "event": "stats",
            "in_flight": len(states),
            "scheduled": sum(s.get("num_requests", 0) for s in replica_stats.values()),
            "waiting_admission": sum(1 for s in states if s.admit_status == 0),
            "kv_usage": round(used / cap, 3) if cap else None,
            "gen_tokens_per_s": round((produced - last.get("produced", 0)) / dt_s, 1) if dt_s > 0 else None,
            "ended": self.ended - last.get("ended", 0),
            "slo_met": self.met - last.get("met", 0),
            "rejected": self.rejected - last.get("rejected", 0),
        }
        last.update(produced=produced, ended=self.ended, met=self.met, rejected=self.rejected)
        return fields

    async def periodic(self, snapshot: Callable[[], tuple[Iterable[ReqState], dict[int, dict]]]) -> None:
        """Every ``interval_s``: one stats line, skipped while the server has been idle."""
        if self.interval_s <= 0:
            return
        last: dict = {}
        t_last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            states, replica_stats = snapshot()
            now = time.monotonic()
            fields = self.stats_fields(states, replica_stats, now - t_last, last)
            t_last = now
            if fields["in_flight"] or fields["ended"]:
                stats_log.info("stats %s", _text(fields), extra={"fields": fields})
