"""The SLOs-Serve paper's batch-time form: T = max over lines l of (k1_l*tokens + k2_l*spec + b_l).

Presets carry the coefficients published with the SLOs-Serve authors' code (seconds; A100
unless named). Where the authors give a draft-model variant, the ``spec`` line coefficients
are set; otherwise the spec term is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sloserve.perf.base import BatchTimeModel


@dataclass(frozen=True)
class Line:
    per_token_s: float
    per_spec_step_s: float
    base_s: float


class PaperLinesModel(BatchTimeModel):
    """max-of-lines model with a closed-form inverse."""

    def __init__(self, name: str, lines: tuple[Line, ...]) -> None:
        if not lines:
            raise ValueError("need at least one line")
        self.name = name
        self.lines = lines

    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        return max(l.per_token_s * num_tokens + l.per_spec_step_s * spec_steps + l.base_s for l in self.lines)

    def max_tokens_within_s(
        self, time_s: float, spec_steps: int = 0, kv_read_tokens: int = 0, num_requests: int = 0
    ) -> int:
        best = 1 << 30
        for l in self.lines:
            room = time_s - l.base_s - l.per_spec_step_s * spec_steps
            if room < 0:
                return 0
            if l.per_token_s > 0:
                # small epsilon so that batch_time_s(result) <= time_s despite rounding
                best = min(best, int(math.floor(room / l.per_token_s * (1 - 1e-12))))
        return max(best, 0)

    def __repr__(self) -> str:
        return f"PaperLinesModel({self.name!r}, {self.lines})"


def _lines(*coeffs: tuple[float, float, float]) -> tuple[Line, ...]:
    return tuple(Line(k1, k2, b) for k1, k2, b in coeffs)


# (per_token_s, per_spec_step_s, base_s) per line, from the SLOs-Serve authors' code.
PAPER_PRESETS: dict[str, tuple[Line, ...]] = {
    "opt-6.7b-a100": _lines((6.8783e-5, 1.249e-6, 0.024800565), (7.5228e-5, 3.464606e-3, 0.003032787)),
    "opt-13b-tp2-a100": _lines((7.2128e-5, 3.340682e-3, 0.03173174), (1e-7, 3.013672e-3, 1.2388e-5)),
    "opt-30b-tp4-a100": _lines((9.31e-5, 2.80e-3, 0.0379), (0.0, 3.01e-3, 0.0)),
    "toolllama-2-7b-a100": _lines((6.5724e-5, 0.0, 0.027524459), (1e-7, 0.0, 1.2388e-5)),
    "r1-distill-qwen-7b-a100": _lines((6.0446e-5, 0.0, 0.014011914), (1e-7, 0.0, 0.03)),
    "r1-distill-qwen-1.5b-a100": _lines((2.92e-4, 0.0, 0.0180)),
    "opt-13b-h100": _lines((4.18e-5, 0.0, 0.0274)),
}

# The opt-6.7b preset without its draft model (spec term dropped), as the authors list it.
PAPER_PRESETS["opt-6.7b-nodraft-a100"] = _lines((6.8783e-5, 0.0, 0.024800565), (7.5228e-5, 0.0, 0.003032787))
