"""TTFT/TPOT/attainment/goodput/smooth goodput, shared by the simulator, the runtime and the benchmark."""

from sloserve.metrics.attainment import DEFAULT_TOLERANCE, stage_attained, token_deadlines_s, tpot_array_s
from sloserve.metrics.records import StageRecord
from sloserve.metrics.smooth import idle_latency_s, token_deadlines_paced_s
from sloserve.metrics.summary import percentiles_ms, summarize

__all__ = [
    "DEFAULT_TOLERANCE",
    "StageRecord",
    "idle_latency_s",
    "percentiles_ms",
    "stage_attained",
    "summarize",
    "token_deadlines_paced_s",
    "token_deadlines_s",
    "tpot_array_s",
]
