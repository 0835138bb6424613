"""SLO classes of the six SLOs-Serve scenarios (issue 2, item 2).

TTFT SLOs are slowdowns: the SLO is ``ttft_slowdown`` times the zero-load prefill time the
batch-time model predicts for the prompt alone. TPOTs are milliseconds per output token.
An ``-S`` variant of every class doubles its TPOTs (TTFT slowdowns unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sloserve.core.slo import TTFTSLO, DecodeSegment


@dataclass(frozen=True)
class SloPreset:
    """One SLO class."""

    name: str
    ttft_slowdown: float
    tpot_ms: float  # decode TPOT; the "answer" TPOT for reasoning, intermediate rounds for tools
    think_tpot_ms: float | None = None  # reasoning: TPOT of the thinking tokens
    final_ttft_slowdown: float | None = None  # tool-calling: the final round's TTFT slowdown
    final_tpot_ms: float | None = None  # tool-calling: the final round's TPOT

    def __post_init__(self) -> None:
        for label, value in (
            ("ttft_slowdown", self.ttft_slowdown),
            ("tpot_ms", self.tpot_ms),
            ("think_tpot_ms", self.think_tpot_ms),
            ("final_ttft_slowdown", self.final_ttft_slowdown),
            ("final_tpot_ms", self.final_tpot_ms),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"SloPreset {self.name!r}: {label} must be positive, got {value}")

    def scaled(self, factor: float) -> "SloPreset":
        """Every SLO (TTFT slowdowns and TPOTs) multiplied by ``factor``."""
        if not factor > 0:
            raise ValueError(f"SLO scale must be positive, got {factor}")
        if factor == 1.0:
            return self

        def mul(v: float | None) -> float | None:
            return None if v is None else v * factor

        return replace(
            self.ttft_scaled(factor),
            tpot_ms=self.tpot_ms * factor,
            think_tpot_ms=mul(self.think_tpot_ms),
            final_tpot_ms=mul(self.final_tpot_ms),
        )

    def ttft_scaled(self, factor: float) -> "SloPreset":
        """The TTFT slowdowns (the final round's too) multiplied by ``factor``; TPOTs kept."""
        if not factor > 0:
            raise ValueError(f"TTFT scale must be positive, got {factor}")
        if factor == 1.0:
            return self
        final = self.final_ttft_slowdown
        return replace(
            self,
            ttft_slowdown=self.ttft_slowdown * factor,
            final_ttft_slowdown=None if final is None else final * factor,
        )

    def relaxed(self) -> "SloPreset":
        """The ``-S`` variant: TPOTs doubled."""

        def dbl(v: float | None) -> float | None:
            return None if v is None else 2.0 * v

        return replace(
            self,
            name=self.name + "-S",
            tpot_ms=2.0 * self.tpot_ms,
            think_tpot_ms=dbl(self.think_tpot_ms),
            final_tpot_ms=dbl(self.final_tpot_ms),
        )

    # ---- core SLO objects ------------------------------------------------------------
    def ttft(self, final: bool = False) -> TTFTSLO:
        """TTFT SLO of a stage (``final``: the last round of a tool-calling chain)."""
        slowdown = self.final_ttft_slowdown if final and self.final_ttft_slowdown is not None else self.ttft_slowdown
        return TTFTSLO(slowdown=slowdown)

    def decode_tpot_ms(self, final: bool = False) -> float:
        return self.final_tpot_ms if final and self.final_tpot_ms is not None else self.tpot_ms

    def segments(self, thinking_tokens: int = 0, final: bool = False) -> tuple[DecodeSegment, ...]:
        """Decode segments: with thinking tokens, "thinking" at think TPOT then open "answer"."""
        if thinking_tokens > 0:
            if self.think_tpot_ms is None:
                raise ValueError(f"SLO class {self.name!r} has no thinking TPOT")
            return (
                DecodeSegment(self.think_tpot_ms, thinking_tokens, "thinking"),
                DecodeSegment(self.tpot_ms, None, "answer"),
            )
        return (DecodeSegment(self.decode_tpot_ms(final), None, "decode"),)


_BASE: tuple[SloPreset, ...] = (
    SloPreset("chatbot", ttft_slowdown=5.0, tpot_ms=100.0),
    SloPreset("coder", ttft_slowdown=5.0, tpot_ms=50.0),
    SloPreset("summarizer", ttft_slowdown=3.0, tpot_ms=100.0),
    SloPreset("reasoning", ttft_slowdown=3.0, tpot_ms=100.0, think_tpot_ms=50.0),
    SloPreset("tool-calling", ttft_slowdown=3.0, tpot_ms=50.0, final_ttft_slowdown=3.0, final_tpot_ms=100.0),
)

SLO_PRESETS: dict[str, SloPreset] = {p.name: p for base in _BASE for p in (base, base.relaxed())}


def get_slo_preset(name: str) -> SloPreset:
    """An SLO class by name (``chatbot``, ``coder-S``, ...); KeyError listing the choices."""
    try:
        return SLO_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown SLO preset {name!r}; choices: {', '.join(SLO_PRESETS)}") from None
