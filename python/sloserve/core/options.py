"""``key=value`` option parsing shared by every CLI (simulator, server, SGLang launcher)."""

from __future__ import annotations

from typing import Any, Sequence


def parse_value(text: str) -> Any:
    """Option values: int, float, true/false, none/null, else the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_kv(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "max-hops=3"]`` -> ``{"a": 1, "max_hops": 3}``; ValueError naming ``flag``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out
