"""Per-stage outcome records, filled from scheduler events by any driver."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sloserve.core.slo import DecodeSegment
from sloserve.metrics.attainment import DEFAULT_TOLERANCE, stage_attained


@dataclass
class StageRecord:
    """What happened to one stage (one scheduler Request)."""

    request_id: str
    program_id: str
    slo_class: str
    stage_index: int
    stage_name: str
    arrival_s: float
    ttft_slo_s: float
    segments: tuple[DecodeSegment, ...]
    prompt_tokens: int
    output_tokens: int
    replica_id: int = 0
    tier: str = "pending"
    rejected: bool = False
    reason: str = ""
    finish_s: float | None = None
    num_preemptions: int = 0
    spec_verify_steps: int = 0
    spec_tokens: int = 0
    token_times: list[float] = field(default_factory=list)

    def add_tokens(self, time_s: float, count: int) -> None:
        self.token_times.extend([time_s] * count)

    @property
    def completed(self) -> bool:
        return self.finish_s is not None and not self.rejected

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] - self.arrival_s if self.token_times else None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first."""
        if len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)

    def attained(self, tolerance: float = DEFAULT_TOLERANCE, check_every: int = 1) -> bool:
        """Served in the SLO tier (best effort counts as a miss), completed, deadlines met."""
        if not self.completed or self.tier in ("best_effort", "rejected"):
            return False
        return stage_attained(
            self.arrival_s, self.ttft_slo_s, self.segments, np.asarray(self.token_times), tolerance, check_every
        )

    def deadlines_met(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        """Deadlines met regardless of tier (for reporting best-effort quality)."""
        return self.completed and stage_attained(
            self.arrival_s, self.ttft_slo_s, self.segments, np.asarray(self.token_times), tolerance
        )
