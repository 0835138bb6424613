"""SLO tagging: the flat ``custom_params`` dict a client sends, parsed and resolved.

Keys are documented in docs/slo-api.md. Every ``slo_*`` key is validated; an unknown one or a
bad value raises :class:`SloParamError` naming the field (the HTTP front answers 400). Keys
without the ``slo_`` prefix are left alone: other plugins may use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sloserve.core.slo import TTFTSLO, DecodeSegment

DEFAULT_THINK_MARKER = "</think>"
MAX_ARRIVAL_SKEW_S = 1.0  # an upstream arrival stamp may be this far in our future (clock skew)


class SloParamError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"custom_params.{field_name}: {message}")
        self.field_name = field_name


@dataclass(frozen=True)
class SloDefaults:
    """What a request gets when it names no SLO at all."""

    slo_class: str = "default"
    ttft_slowdown: float = 5.0
    tpot_ms: float = 100.0


@dataclass(frozen=True)
class SloSpec:
    slo_class: str
    ttft: TTFTSLO
    tpot_ms: float
    think_tpot_ms: float | None = None
    think_tokens: int | None = None  # thinking ends after this many output tokens
    think_marker: str | None = None  # ...or where this text appears in the output
    stage: str = "main"
    program_id: str | None = None
    stage_index: int = 0
    arrival_unix_s: float | None = None
    best_effort: bool = False
    routed_best_effort: bool = False  # a router's verdict (slo_routed_best_effort), not the client's

    @property
    def emitted_marker(self) -> str | None:
        """The end-of-thinking text the synthetic model emits: reasoning requests and thinking
        stages stop thinking half way through their output."""
        return self.think_marker or (DEFAULT_THINK_MARKER if self.stage == "thinking" else None)

    def segments(self) -> tuple[DecodeSegment, ...]:
        """Decode segments as known at admission (a marker's boundary is learned later)."""
        if self.think_tpot_ms is None:
            return (DecodeSegment(self.tpot_ms, None, self.stage),)
        if self.think_tokens is not None:
            if self.think_tokens == 0:
                return (DecodeSegment(self.tpot_ms, None, "answer"),)
            return (
                DecodeSegment(self.think_tpot_ms, self.think_tokens, "thinking"),
                DecodeSegment(self.tpot_ms, None, "answer"),
            )
        return (DecodeSegment(self.think_tpot_ms, None, "thinking"),)

    def segments_after_marker(self, think_tokens: int) -> tuple[DecodeSegment, ...]:
        """Segments once the end-of-thinking marker was seen after ``think_tokens`` tokens."""
        assert self.think_tpot_ms is not None
        if think_tokens <= 0:
            return (DecodeSegment(self.tpot_ms, None, "answer"),)
        return (
            DecodeSegment(self.think_tpot_ms, think_tokens, "thinking"),
            DecodeSegment(self.tpot_ms, None, "answer"),
        )

    def ttft_slo_s(self, prompt_tokens: int, zero_load_prefill_s: Callable[[int], float]) -> float:
        """The TTFT SLO in seconds; a slowdown that resolves past ``MAX_TTFT_S`` is refused."""
        ttft = self.ttft.resolve_s(prompt_tokens, zero_load_prefill_s)
        if not (math.isfinite(ttft) and 0 < ttft <= MAX_TTFT_S):
            name = "slo_ttft_ms" if self.ttft.absolute_ms is not None else "slo_ttft_slowdown"
            raise SloParamError(
                name,
                f"resolves to a TTFT SLO of {ttft:g} s for this {prompt_tokens}-token prompt; "
                f"the most a request may ask is {MAX_TTFT_S:g} s",
            )
        return ttft


# Documented ranges (docs/slo-api.md). They are sanity limits, not what bounds the planner: its
# work and memory no longer depend on how far away a deadline is (planner/batch.py DENSE_STEPS).
# They stay because a TTFT past 10 minutes is no latency target (slo_best_effort serves such a
# request), the front keeps a request queued for up to its TTFT SLO (--queue-timeout-s), and
# bounded values keep every derived deadline finite (1e308 overflowed to inf).
MAX_TTFT_S = 600.0  # a resolved TTFT SLO (absolute or slowdown x T0) above this is refused
MAX_TTFT_SLOWDOWN = 10_000.0
MAX_TPOT_MS = 60_000.0
MAX_THINK_TOKENS = 10_000_000
MAX_STAGE_INDEX = 1_000_000
MAX_ARRIVAL_AGE_S = 3600.0  # an upstream arrival stamp may be at most this old


def _positive(name: str, value: Any, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SloParamError(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise SloParamError(name, f"must be a positive finite number, got {value}")
    if value > hi:
        raise SloParamError(name, f"must be in (0, {hi:g}], got {value:g}")
    return float(value)


def _bounded(hi: float) -> Callable[[str, Any], float]:
    return lambda name, value: _positive(name, value, hi)


def _text(name: str, value: Any, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise SloParamError(name, f"must be a non-empty string of at most {max_len} characters")
    return value


def _int(name: str, value: Any, minimum: int = 0, maximum: int = MAX_STAGE_INDEX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SloParamError(name, f"must be an integer in [{minimum}, {maximum}], got {str(value)[:64]}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SloParamError(name, f"must be true or false, got {value!r}")
    return value


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "slo_class": _text,
    "slo_ttft_ms": _bounded(MAX_TTFT_S * 1e3),
    "slo_ttft_slowdown": _bounded(MAX_TTFT_SLOWDOWN),
    "slo_tpot_ms": _bounded(MAX_TPOT_MS),
    "slo_think_tpot_ms": _bounded(MAX_TPOT_MS),
    "slo_think_tokens": lambda n, v: _text(n, v) if isinstance(v, str) else _int(n, v, 0, MAX_THINK_TOKENS),
    "slo_stage": lambda n, v: _text(n, v, 64),
    "slo_program_id": _text,
    "slo_stage_index": _int,
    "slo_arrival_s": _positive,
    "slo_best_effort": _bool,
    # set by sloserve's routers (the SGLang DP controller, the Ray ingress): best effort because no
    # replica could admit it, not because the client asked; such a request may still expire
    "slo_routed_best_effort": _bool,
}
SLO_KEYS = tuple(sorted(_VALIDATORS))


def _preset(name: str) -> Any:
    try:
        from sloserve.workloads import get_slo_preset
    except ImportError:
        raise SloParamError("slo_class", f"unknown SLO class {name!r} (no SLO presets are installed)") from None
    try:
        return get_slo_preset(name)
    except (KeyError, ValueError) as exc:
        raise SloParamError("slo_class", str(exc).strip("'\"")) from None


def validate(custom: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated ``slo_*`` entries of ``custom`` (unknown slo_* keys are errors)."""
    if custom is None:
        return {}
    if not isinstance(custom, Mapping):
        raise SloParamError("", "custom_params must be an object")
    out: dict[str, Any] = {}
    for key, value in custom.items():
        if not isinstance(key, str) or not key.startswith("slo_"):
            continue
        check = _VALIDATORS.get(key)
        if check is None:
            raise SloParamError(key, f"unknown SLO key; known: {', '.join(SLO_KEYS)}")
        if value is None:
            continue  # null means "not given", as SGLang treats optional fields
        out[key] = check(key, value)
    if "slo_ttft_ms" in out and "slo_ttft_slowdown" in out:
        raise SloParamError("slo_ttft_ms", "give slo_ttft_ms or slo_ttft_slowdown, not both")
    return out


TTFT_KEYS = ("slo_ttft_ms", "slo_ttft_slowdown", "slo_class")  # the keys that set a TTFT SLO
# what a best-effort request that expired at its TTFT deadline is told (both backends, HTTP 429)
EXPIRED_MESSAGE = "not admitted, and no first token by its TTFT deadline (server overloaded); retry later"


def asks_for_ttft(custom_params: Mapping[str, Any] | None) -> bool:
    """Whether the client set a TTFT SLO itself (an untagged request runs on the defaults): only
    then may a request the plan did not admit be ended at that deadline (best-effort expiry)."""
    return isinstance(custom_params, Mapping) and any(custom_params.get(k) is not None for k in TTFT_KEYS)


def parse_slo(custom: Mapping[str, Any] | None, defaults: SloDefaults = SloDefaults()) -> SloSpec:
    """Resolve a request's SLO: explicit keys override the named preset, which overrides defaults."""
    p = validate(custom)
    slo_class = p.get("slo_class", defaults.slo_class)
    stage = p.get("slo_stage", "main")
    ttft_slowdown, tpot_ms, think_tpot = defaults.ttft_slowdown, defaults.tpot_ms, None
    if "slo_class" in p:
        preset = _preset(slo_class)
        ttft_slowdown, tpot_ms = preset.ttft_slowdown, preset.tpot_ms
        think_tpot = getattr(preset, "think_tpot_ms", None)
        if stage == "final":
            ttft_slowdown = getattr(preset, "final_ttft_slowdown", None) or ttft_slowdown
            tpot_ms = getattr(preset, "final_tpot_ms", None) or tpot_ms
    if "slo_ttft_ms" in p:
        ttft = TTFTSLO(absolute_ms=p["slo_ttft_ms"])
    else:
        ttft = TTFTSLO(slowdown=p.get("slo_ttft_slowdown", ttft_slowdown))
    tpot_ms = p.get("slo_tpot_ms", tpot_ms)
    think_tpot = p.get("slo_think_tpot_ms", think_tpot)
    think = p.get("slo_think_tokens")
    if think is not None and think_tpot is None:
        raise SloParamError("slo_think_tokens", "needs slo_think_tpot_ms or a slo_class with a thinking TPOT")
    think_tokens = think if isinstance(think, int) else None
    marker = think if isinstance(think, str) else None
    if think_tpot is not None and think is None:
        if stage == "thinking":  # the whole output is thinking
            tpot_ms, think_tpot = p.get("slo_tpot_ms", think_tpot), None
        elif stage in ("answer", "final", "tool_call"):
            think_tpot = None  # a non-thinking stage of a reasoning program
        else:
            marker = DEFAULT_THINK_MARKER
    return SloSpec(
        slo_class=slo_class,
        ttft=ttft,
        tpot_ms=tpot_ms,
        think_tpot_ms=think_tpot,
        think_tokens=think_tokens,
        think_marker=marker,
        stage=stage,
        program_id=p.get("slo_program_id"),
        stage_index=p.get("slo_stage_index", 0),
        arrival_unix_s=p.get("slo_arrival_s"),
        best_effort=p.get("slo_best_effort", False),
        routed_best_effort=p.get("slo_routed_best_effort", False),
    )


def arrival_from_unix(arrival_unix_s: float, now_unix_s: float, now_server_s: float) -> float:
    """Convert an upstream arrival stamp (Unix seconds) into the server's monotonic time base."""
    if arrival_unix_s > now_unix_s + MAX_ARRIVAL_SKEW_S:
        raise SloParamError("slo_arrival_s", "lies in the future (Unix seconds expected)")
    if arrival_unix_s < now_unix_s - MAX_ARRIVAL_AGE_S:
        raise SloParamError(
            "slo_arrival_s", f"lies more than {MAX_ARRIVAL_AGE_S:g} s in the past (Unix seconds expected)"
        )
    return now_server_s - max(now_unix_s - arrival_unix_s, 0.0)
