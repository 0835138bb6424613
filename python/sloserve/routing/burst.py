"""Arrival-rate tracking per SLO tier, driven by ``now_s`` (never a clock), to detect bursts.

A burst is a short-term arrival rate well above the long-term one: two exponentially decaying
rate estimates per key (fast and slow time constants), and a burst when fast >= ratio * slow
with enough recent arrivals that the fast estimate is not one lucky pair. Reacting within a
fraction of a second matters because a burst's damage is done by queues that build in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TOTAL = "*"  # key of the all-tiers tracker


class DecayingRate:
    """Events per second, exponentially weighted with time constant ``tau_s``.

    Each event adds 1 to a mass that decays as exp(-dt / tau); mass / tau estimates the rate.
    Before ``tau_s`` of history the mass is short by (1 - exp(-elapsed / tau)); dividing that
    out (with elapsed floored at ``floor_s``) keeps the slow estimate from reading as a burst
    at start-up.
    """

    __slots__ = ("tau_s", "floor_s", "_mass", "_last_s", "_first_s")

    def __init__(self, tau_s: float, floor_s: float) -> None:
        if tau_s <= 0 or floor_s <= 0:
            raise ValueError("time constants must be positive")
        self.tau_s = tau_s
        self.floor_s = floor_s
        self._mass = 0.0
        self._last_s: float | None = None
        self._first_s: float | None = None

    def mass(self, now_s: float) -> float:
        """Decayed event count (about the events of the last ``tau_s``)."""
        if self._last_s is None:
            return 0.0
        return self._mass * math.exp(-max(now_s - self._last_s, 0.0) / self.tau_s)

    def add(self, now_s: float, weight: float = 1.0) -> None:
        if self._first_s is None:
            self._first_s = now_s
        self._mass = self.mass(now_s) + weight
        self._last_s = max(now_s, self._last_s if self._last_s is not None else now_s)

    def rate(self, now_s: float) -> float:
        if self._first_s is None:
            return 0.0
        elapsed = max(now_s - self._first_s, self.floor_s)
        return self.mass(now_s) / (self.tau_s * -math.expm1(-elapsed / self.tau_s))


@dataclass(frozen=True)
class BurstConfig:
    fast_tau_s: float = field(default=2.0, metadata={"help": "short-term rate time constant (s)"})
    slow_tau_s: float = field(default=30.0, metadata={"help": "long-term rate time constant (s)"})
    ratio: float = field(default=2.0, metadata={"help": "burst when fast rate >= ratio x slow rate"})
    min_events: float = field(default=6.0, metadata={"help": "and at least this many arrivals in ~fast_tau_s"})

    def __post_init__(self) -> None:
        if not 0 < self.fast_tau_s < self.slow_tau_s:
            raise ValueError("need 0 < fast_tau_s < slow_tau_s")
        if self.ratio <= 1.0:
            raise ValueError("burst ratio must be > 1")
        if self.min_events < 0:
            raise ValueError("min_events must be >= 0")


class BurstDetector:
    """Fast and slow arrival rates per key (an SLO tier) and for all keys together."""

    def __init__(self, config: BurstConfig | None = None) -> None:
        self.config = config if config is not None else BurstConfig()
        self._fast: dict[str, DecayingRate] = {}
        self._slow: dict[str, DecayingRate] = {}

    def _pair(self, key: str) -> tuple[DecayingRate, DecayingRate]:
        fast = self._fast.get(key)
        if fast is None:
            c = self.config
            fast = self._fast[key] = DecayingRate(c.fast_tau_s, c.fast_tau_s)
            self._slow[key] = DecayingRate(c.slow_tau_s, c.fast_tau_s)
        return fast, self._slow[key]

    def observe(self, key: str, now_s: float) -> None:
        for k in (key, TOTAL):
            fast, slow = self._pair(k)
            fast.add(now_s)
            slow.add(now_s)

    def in_burst(self, key: str, now_s: float) -> bool:
        if key not in self._fast:
            return False
        fast, slow = self._fast[key], self._slow[key]
        if fast.mass(now_s) < self.config.min_events:
            return False
        return fast.rate(now_s) >= self.config.ratio * slow.rate(now_s)

    def rates(self, now_s: float) -> dict[str, tuple[float, float]]:
        """(fast, slow) arrival rate per key, for stats and docs."""
        return {k: (self._fast[k].rate(now_s), self._slow[k].rate(now_s)) for k in sorted(self._fast)}
