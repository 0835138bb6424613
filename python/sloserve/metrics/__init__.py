"""TTFT/TPOT/attainment/goodput, shared by the simulator, the runtime and the benchmark."""

from sloserve.metrics.attainment import DEFAULT_TOLERANCE, stage_attained, token_deadlines_s, tpot_array_s
from sloserve.metrics.records import StageRecord
from sloserve.metrics.summary import percentiles_ms, summarize

__all__ = [
    "DEFAULT_TOLERANCE",
    "StageRecord",
    "percentiles_ms",
    "stage_attained",
    "summarize",
    "token_deadlines_s",
    "tpot_array_s",
]
