"""Acceptance model and online acceptance-rate estimation.

Geometric model: each draft is accepted with probability alpha given that every earlier
draft of the step was; the first rejection ends the step. A step verifying ``s`` positions
(``s - 1`` drafts plus the last real token) produces ``1 + accepted`` tokens, with expectation
``(1 - alpha**s) / (1 - alpha)`` (``s`` for alpha = 1, and 1 for s = 1: ordinary decoding).

Estimation: every verify step is a run of Bernoulli trials; ``accepted`` successes followed by
one failure when ``accepted < drafts``. A step cut short because the output ended is
right-censored: the trials after the last produced token were never observed, so it counts its
successes and no failure (the exact likelihood of a censored geometric sequence). The
estimate is a Beta posterior mean: a prior worth ``prior_strength`` trials plus the counts,
per SLO class; a request with enough trials of its own is shrunk toward its class's estimate.
Deterministic: no random draw anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


def expected_tokens(alpha: float, positions: int) -> float:
    """Expected tokens produced by one step verifying ``positions`` (>= 1) positions."""
    if positions <= 1:
        return 1.0
    if alpha >= 1.0:
        return float(positions)
    if alpha <= 0.0:
        return 1.0
    return (1.0 - alpha**positions) / (1.0 - alpha)


def planned_tokens(alpha: float, positions: int, safety_margin: float) -> float:
    """Tokens per step a planner relies on: 1 plus the expected gain less the safety margin."""
    return 1.0 + (1.0 - safety_margin) * (expected_tokens(alpha, positions) - 1.0)


def step_observation(drafts: int, produced: int, output_ended: bool) -> tuple[int, int]:
    """(successes, failures) of one verify step with ``drafts`` drafts that produced tokens.

    ``output_ended``: the step finished the request, so tokens after the end were never
    verified (censored: no failure is counted unless all drafts were checked and one failed
    before the end, which the engine's report cannot show).
    """
    if drafts <= 0 or produced <= 0:
        return 0, 0
    accepted = min(produced - 1, drafts)
    if accepted >= drafts or output_ended:
        return accepted, 0
    return accepted, 1


@dataclass
class _Counts:
    successes: int = 0
    failures: int = 0

    @property
    def trials(self) -> int:
        return self.successes + self.failures


class AlphaEstimator:
    """Per-class and per-request acceptance estimates from observed verify steps."""

    def __init__(
        self, prior_alpha: float, prior_strength: float = 20.0, request_min_trials: int = 32, online: bool = True
    ) -> None:
        if not 0.0 <= prior_alpha < 1.0:
            raise ValueError("prior_alpha must be in [0, 1)")
        if prior_strength <= 0:
            raise ValueError("prior_strength must be positive")
        self.prior_alpha = prior_alpha
        self.prior_strength = prior_strength
        self.request_min_trials = request_min_trials
        self.online = online
        self._by_class: dict[str, _Counts] = {}
        self._by_request: dict[str, _Counts] = {}

    @classmethod
    def from_config(cls, spec) -> "AlphaEstimator":
        return cls(spec.alpha_prior, spec.prior_strength, spec.request_min_trials, spec.online)

    def observe(self, slo_class: str, request_id: str, drafts: int, produced: int, output_ended: bool) -> None:
        """Record one verify step of ``request_id`` (a no-op for steps without drafts)."""
        succ, fail = step_observation(drafts, produced, output_ended)
        if succ + fail == 0:
            return
        for table, key in ((self._by_class, slo_class), (self._by_request, request_id)):
            c = table.setdefault(key, _Counts())
            c.successes += succ
            c.failures += fail

    def forget(self, request_id: str) -> None:
        """Drop a finished request's own counts (its class keeps them)."""
        self._by_request.pop(request_id, None)

    def class_alpha(self, slo_class: str) -> float:
        if not self.online:
            return self.prior_alpha
        c = self._by_class.get(slo_class)
        if c is None:
            return self.prior_alpha
        a = self.prior_alpha * self.prior_strength + c.successes
        return a / (self.prior_strength + c.trials)

    def request_alpha(self, request_id: str, slo_class: str) -> float:
        """The request's own estimate once it has enough trials, else its class's."""
        base = self.class_alpha(slo_class)
        if not self.online:
            return base
        c = self._by_request.get(request_id)
        if c is None or c.trials < self.request_min_trials:
            return base
        return (base * self.prior_strength + c.successes) / (self.prior_strength + c.trials)

    def class_trials(self, slo_class: str) -> int:
        c = self._by_class.get(slo_class)
        return c.trials if c is not None else 0

    def snapshot(self) -> dict:
        """Estimates per class (for stats and run JSON)."""
        return {
            k: {"alpha": round(self.class_alpha(k), 4), "trials": c.trials} for k, c in sorted(self._by_class.items())
        }
