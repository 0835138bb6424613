"""Chrome-trace (chrome://tracing, Perfetto) export of a simulated run."""

from __future__ import annotations

import json
from pathlib import Path

from sloserve.sim.simulator import SimResult


def chrome_trace_events(result: SimResult) -> list[dict]:
    """One complete event per engine step (a row per replica) and per-request spans."""
    events: list[dict] = []
    for replica, start_s, dur_s, tokens, items in result.steps:
        events.append(
            {
                "name": "step",
                "ph": "X",
                "pid": replica,
                "tid": 0,
                "ts": start_s * 1e6,
                "dur": dur_s * 1e6,
                "args": {"num_tokens": tokens, "num_items": items},
            }
        )
    for rec in result.records:
        if not rec.token_times:
            continue
        common = {"pid": rec.replica_id, "tid": 1, "cat": rec.slo_class}
        events.append(
            {
                **common,
                "name": f"{rec.request_id} queue+prefill",
                "ph": "X",
                "ts": rec.arrival_s * 1e6,
                "dur": (rec.token_times[0] - rec.arrival_s) * 1e6,
                "args": {"tier": rec.tier, "prompt_tokens": rec.prompt_tokens},
            }
        )
        events.append(
            {
                **common,
                "name": f"{rec.request_id} decode",
                "ph": "X",
                "ts": rec.token_times[0] * 1e6,
                "dur": (rec.token_times[-1] - rec.token_times[0]) * 1e6,
                "args": {"tier": rec.tier, "attained": rec.attained(), "tokens": len(rec.token_times)},
            }
        )
    return events


def write_chrome_trace(result: SimResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps({"traceEvents": chrome_trace_events(result), "displayTimeUnit": "ms"}))
