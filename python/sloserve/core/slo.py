"""Static description of what a client asks for: programs, stages, SLOs.

A *program* is what a user submits: one or more *stages* (rounds). Each stage is a prefill of
its prompt followed by decode *segments*, each segment with its own TPOT SLO (for example
"thinking" tokens with a tight TPOT, then "answer" tokens with a loose one). A tool-calling
program is a chain of stages separated by a tool delay; stage k+1's prompt is stage k's full
context plus the tool output.

Units are in the field names. Everything here is frozen plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class TTFTSLO:
    """Time-to-first-token SLO: absolute milliseconds, or a slowdown factor.

    With a slowdown, the SLO is ``slowdown * T0(prompt)`` where ``T0`` is the zero-load
    prefill time the batch-time model predicts for the prompt alone.
    """

    absolute_ms: float | None = None
    slowdown: float | None = None

    def __post_init__(self) -> None:
        if (self.absolute_ms is None) == (self.slowdown is None):
            raise ValueError("TTFTSLO needs exactly one of absolute_ms or slowdown")
        value = self.absolute_ms if self.absolute_ms is not None else self.slowdown
        if not value > 0:
            raise ValueError(f"TTFT SLO must be positive, got {value}")

    def resolve_s(self, prompt_tokens: int, zero_load_prefill_s: Callable[[int], float]) -> float:
        """The TTFT SLO in seconds for a prompt of ``prompt_tokens`` tokens."""
        if self.absolute_ms is not None:
            return self.absolute_ms / 1e3
        assert self.slowdown is not None
        return self.slowdown * zero_load_prefill_s(prompt_tokens)


@dataclass(frozen=True)
class DecodeSegment:
    """A run of decode tokens sharing one TPOT SLO.

    ``num_tokens`` None means "until the end of the output" (only valid for the last segment).
    """

    tpot_ms: float
    num_tokens: int | None = None
    name: str = "decode"

    def __post_init__(self) -> None:
        if not self.tpot_ms > 0:
            raise ValueError(f"TPOT SLO must be positive, got {self.tpot_ms}")
        if self.num_tokens is not None and self.num_tokens < 0:
            raise ValueError(f"segment num_tokens must be >= 0, got {self.num_tokens}")


@dataclass(frozen=True)
class StageSpec:
    """One round: a prefill of ``prompt_tokens`` then ``output_tokens`` generated tokens.

    ``output_tokens`` is the true output length (the simulator finishes the stage there);
    ``output_tokens_known`` says whether the scheduler may use it for planning.
    ``tool_delay_s`` is the delay between the previous stage's end and this stage's arrival.
    In a tool-calling chain ``prompt_tokens`` is the whole context (previous prompt, previous
    output and the tool output); it is prefilled in full (no prefix cache across the delay).
    """

    prompt_tokens: int
    output_tokens: int
    ttft: TTFTSLO
    segments: tuple[DecodeSegment, ...]
    name: str = "main"
    tool_delay_s: float = 0.0
    output_tokens_known: bool = True
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.output_tokens < 1:
            raise ValueError(f"output_tokens must be >= 1, got {self.output_tokens}")
        if not self.segments:
            raise ValueError("a stage needs at least one decode segment")
        for seg in self.segments[:-1]:
            if seg.num_tokens is None:
                raise ValueError("only the last decode segment may be open-ended")
        if self.tool_delay_s < 0:
            raise ValueError("tool_delay_s must be >= 0")


@dataclass(frozen=True)
class ProgramSpec:
    """What one client submits: an SLO class, an arrival time and a chain of stages."""

    program_id: str
    arrival_s: float
    slo_class: str
    stages: tuple[StageSpec, ...]
    weight: float = 1.0
    metadata: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a program needs at least one stage")
        if self.weight <= 0:
            raise ValueError("weight must be positive")

    @property
    def total_tokens(self) -> int:
        """Largest context any stage reaches (prompt plus output)."""
        return max(s.prompt_tokens + s.output_tokens for s in self.stages)
