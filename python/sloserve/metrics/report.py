"""The per-request SLO report in ``meta_info``: one schema for every backend.

The embedded runtime (``runtime/state.py``) and the SGLang plugin (``sglang/translate.py``)
both put exactly these flat keys into a response's ``meta_info`` (docs/slo-api.md documents
them once); ``bench_serving`` reads them whatever the server. Values are plain JSON scalars.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Sequence

from sloserve.core.slo import DecodeSegment
from sloserve.metrics.attainment import stage_attained, token_deadlines_s

SLO_REPORT_KEYS = (
    "tier",  # slo | best_effort | pending | rejected
    "admission",  # the policy's reason (admitted, best_effort, no_time, ...)
    "replica",  # data-parallel replica that served it
    "slo_class",
    "slo_stage",
    "slo_program_id",
    "slo_ttft_ms",
    "slo_tpot_ms",
    "slo_think_tpot_ms",
    "slo_think_tokens",  # the SLO as resolved
    "ttft_deadline_ms",
    "last_token_deadline_ms",  # deadlines after arrival (tolerance included)
    "ttft_ms",
    "tpot_ms",  # measured: first token after arrival; mean gap between later tokens
    "slo_met",  # true/false once finished, null while streaming
    "engine",  # simulated (embedded runtime) | sglang
)


def segment_fields(segments: Sequence[DecodeSegment]) -> dict[str, Any]:
    """``slo_tpot_ms``, ``slo_think_tpot_ms``, ``slo_think_tokens`` from decode segments."""
    thinking = len(segments) > 1 or (segments and segments[0].name == "thinking")
    first = segments[0] if segments else None
    return {
        "slo_tpot_ms": segments[-1].tpot_ms if segments and segments[-1].name != "thinking" else None,
        "slo_think_tpot_ms": first.tpot_ms if thinking and first is not None else None,
        "slo_think_tokens": first.num_tokens if thinking and first is not None else None,
    }


@dataclass
class TokenLog:
    """When each output token of one request was seen (Unix seconds), for its report."""

    times_s: array = field(default_factory=lambda: array("d"))

    def note(self, num_output_tokens: int, now_s: float) -> None:
        """Tokens up to ``num_output_tokens`` not seen before were produced by ``now_s``."""
        missing = int(num_output_tokens) - len(self.times_s)
        if missing > 0:
            self.times_s.extend([float(now_s)] * missing)

    def measured(self, arrival_s: float) -> dict[str, Any]:
        n = len(self.times_s)
        ttft = (self.times_s[0] - arrival_s) * 1e3 if n else None
        tpot = (self.times_s[-1] - self.times_s[0]) / (n - 1) * 1e3 if n >= 2 else None
        return {"ttft_ms": ttft, "tpot_ms": tpot}

    def final(self, arrival_s: float, ttft_slo_s: float, segments: Sequence[DecodeSegment]) -> dict[str, Any]:
        """``slo_met`` and the last token's deadline, from every token time."""
        if not self.times_s:
            return {"slo_met": False, "last_token_deadline_ms": None}
        deadlines = token_deadlines_s(arrival_s, ttft_slo_s, segments, self.times_s)
        return {
            "slo_met": stage_attained(arrival_s, ttft_slo_s, segments, self.times_s),
            "last_token_deadline_ms": (float(deadlines[-1]) - arrival_s) * 1e3,
        }
