"""SpecConfig: how speculative decoding is used; SpecOptions: the simulator's flags that build it.

The config travels in ``SchedulerContext.spec`` (to every policy) and ``SimConfig.spec`` (to
the simulator). ``None`` anywhere means speculation off, the same as ``mode="off"``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from enum import Enum

from sloserve.cli_dataclass import add_dataclass_arguments, dataclass_from_namespace


class SpecMode(str, Enum):
    OFF = "off"  # ordinary decoding, one token per step
    FIXED = "fixed"  # every decode verifies fixed_len positions (the paper's fixed ablation)
    ADAPTIVE = "adaptive"  # per-TPOT-tier length maximizing the prefill budget (SLOs-Serve)
    GOODPUT = "goodput"  # one length per batch maximizing decode tokens/s (SmartSpec-like)


@dataclass(frozen=True)
class SpecConfig:
    mode: str = field(default="adaptive", metadata={"help": "off | fixed | adaptive | goodput"})
    alpha_prior: float = field(
        default=0.7,
        metadata={"help": "prior per-token acceptance rate the planner starts from (and keeps when online=False)"},
    )
    max_spec_len: int = field(
        default=4, metadata={"help": "K: most verified positions per step (K-1 drafts + 1); 1 disables speculation"}
    )
    fixed_len: int = field(default=4, metadata={"help": "verified positions per step in mode 'fixed'"})
    online: bool = field(
        default=True, metadata={"help": "estimate alpha online per SLO class (and per request) from accepted lengths"}
    )
    prior_strength: float = field(
        default=20.0, metadata={"help": "pseudo-observations (draft trials) the prior is worth in the online estimate"}
    )
    request_min_trials: int = field(
        default=32, metadata={"help": "draft trials a request needs before its own alpha estimate replaces its class's"}
    )
    safety_margin: float = field(
        default=0.15,
        metadata={
            "help": "fraction of the expected speculative gain (tokens/step above 1) not relied on when "
            "sizing batches; 0 plans on the expected value"
        },
    )
    lead_steps: float = field(
        default=1.0,
        metadata={
            "help": "planner: force a speculative decode into a step this many steps earlier than the "
            "non-speculative rule (next token due within 2 steps), so one unlucky verify does "
            "not cut the following step short"
        },
    )
    uniform_len: bool = field(
        default=False,
        metadata={
            "help": "one length for every decode of a batch (SGLang EAGLE); False lets a tier verify "
            "fewer positions than the batch's draft steps"
        },
    )

    def __post_init__(self) -> None:
        modes = {m.value for m in SpecMode}
        if self.mode not in modes:
            raise ValueError(f"spec mode must be one of {sorted(modes)}, got {self.mode!r}")
        if not 0.0 <= self.alpha_prior < 1.0:
            raise ValueError(f"alpha_prior must be in [0, 1), got {self.alpha_prior}")
        if not 1 <= self.max_spec_len <= 32:
            raise ValueError(f"max_spec_len must be in 1..32, got {self.max_spec_len}")
        if not 1 <= self.fixed_len <= 32:
            raise ValueError(f"fixed_len must be in 1..32, got {self.fixed_len}")
        if self.prior_strength <= 0:
            raise ValueError("prior_strength must be positive")
        if self.request_min_trials < 1:
            raise ValueError("request_min_trials must be >= 1")
        if self.lead_steps < 0:
            raise ValueError("lead_steps must be >= 0")
        if not 0.0 <= self.safety_margin <= 1.0:
            raise ValueError(f"safety_margin must be in [0, 1], got {self.safety_margin}")

    @property
    def enabled(self) -> bool:
        return self.mode != SpecMode.OFF.value and (self.max_spec_len > 1 or self.mode == SpecMode.FIXED.value)


def spec_enabled(spec: SpecConfig | None) -> bool:
    """True when ``spec`` asks for any speculation."""
    return spec is not None and spec.enabled


# ---- CLI --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpecOptions:
    """The simulator's speculation flags: the engine's true acceptance rate and the planner's
    SpecConfig (``python -m sloserve.sim run --spec adaptive --alpha 0.7``)."""

    spec: str = field(default="off", metadata={"help": "speculation mode", "choices": tuple(m.value for m in SpecMode)})
    alpha: float = field(default=0.0, metadata={"help": "true per-token draft acceptance rate in the simulated engine"})
    max_spec_len: int = field(default=4, metadata={"help": "most verified positions per step (K)"})
    spec_fixed_len: int | None = field(
        default=None, metadata={"help": "positions per step in --spec fixed (default: --max-spec-len)"}
    )
    spec_online: bool = field(
        default=True,
        metadata={"help": "estimate alpha online; --no-spec-online plans with the prior alpha only", "negatable": True},
    )
    spec_prior: float | None = field(
        default=None, metadata={"help": "prior alpha for the planner (default: --alpha, or 0.7 without it)"}
    )
    spec_margin: float = field(default=0.15, metadata={"help": "safety margin on the speculative gain"})
    spec_uniform: bool = field(default=False, metadata={"help": "one length per batch (SGLang EAGLE)"})

    @property
    def off(self) -> bool:
        return self.spec in (None, SpecMode.OFF.value)  # None: a benchmark's edited namespace

    def config(self) -> SpecConfig | None:
        """The planner's SpecConfig, None with --spec off; ValueError on a bad value."""
        if self.off:
            return None
        return SpecConfig(
            mode=self.spec,
            alpha_prior=self.spec_prior if self.spec_prior is not None else (self.alpha or 0.7),
            max_spec_len=self.max_spec_len,
            fixed_len=self.spec_fixed_len if self.spec_fixed_len is not None else self.max_spec_len,
            online=self.spec_online,
            safety_margin=self.spec_margin,
            uniform_len=self.spec_uniform,
        )

    def policy(self, policy: str) -> str:
        """``policy``'s speculative variant (``<policy>+spec``) when speculation is on, so every
        registered policy honours the flags; a name that is no registered scheduler (e.g. a
        disaggregated pair) is returned as is, for the caller to report."""
        if self.off:
            return policy
        from sloserve.spec.decorate import speculative_policy  # noqa: PLC0415 (loads the registry)

        try:
            return speculative_policy(policy)
        except KeyError:
            return policy


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add SpecOptions' flags (--spec, --alpha, --max-spec-len, --spec-online/--no-spec-online...)
    in their own help group. Idempotent (a parser that already has --spec is left alone)."""
    if "--spec" in getattr(parser, "_option_string_actions", {}):
        return
    add_dataclass_arguments(parser.add_argument_group("speculative decoding"), SpecOptions)


def spec_from_args(args) -> dict:
    """SimConfig keyword arguments {"spec": SpecConfig | None, "alpha": float} from a parsed
    namespace (attributes it lacks take their defaults); with speculation on, ``args.policy``
    (when present) is switched to its speculative variant."""
    opts = dataclass_from_namespace(args, SpecOptions)
    cfg = opts.config()
    if cfg is not None and getattr(args, "policy", None):
        args.policy = opts.policy(args.policy)
    return {"spec": cfg, "alpha": opts.alpha}
