"""SpecConfig: how speculative decoding is used, and the CLI flags that build it.

The config travels in ``SchedulerContext.spec`` (to every policy) and ``SimConfig.spec`` (to
the simulator). ``None`` anywhere means speculation off, the same as ``mode="off"``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from enum import Enum


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
def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --spec/--alpha/--max-spec-len/--spec-online/--spec-prior; sets ``build_spec``.
    Idempotent (a parser that already has --spec is left alone)."""
    if "--spec" in getattr(parser, "_option_string_actions", {}):
        return
    g = parser.add_argument_group("speculative decoding")
    g.add_argument("--spec", default="off", choices=[m.value for m in SpecMode], help="speculation mode (default off)")
    g.add_argument(
        "--alpha", type=float, default=0.0, help="true per-token draft acceptance rate in the simulated engine"
    )
    g.add_argument("--max-spec-len", type=int, default=4, help="most verified positions per step (K)")
    g.add_argument(
        "--spec-fixed-len", type=int, default=None, help="positions per step in --spec fixed (default: --max-spec-len)"
    )
    g.add_argument(
        "--spec-online", dest="spec_online", action="store_true", default=True, help="estimate alpha online (default)"
    )
    g.add_argument("--no-spec-online", dest="spec_online", action="store_false", help="plan with the prior alpha only")
    g.add_argument(
        "--spec-prior",
        type=float,
        default=None,
        help="prior alpha for the planner (default: --alpha, or 0.7 without it)",
    )
    g.add_argument("--spec-margin", type=float, default=0.15, help="safety margin on the speculative gain")
    g.add_argument("--spec-uniform", action="store_true", help="one length per batch (SGLang EAGLE)")
    parser.set_defaults(build_spec=spec_from_args)


def spec_from_args(args) -> dict:
    """SimConfig keyword arguments {"spec": SpecConfig | None, "alpha": float} from parsed flags.

    With speculation on, ``args.policy`` is also switched to its speculative variant
    (``<policy>+spec``, see ``spec.decorate.speculative_policy``) so every registered policy
    honours the flags."""
    alpha = float(getattr(args, "alpha", 0.0) or 0.0)
    mode = getattr(args, "spec", "off") or "off"
    if mode == SpecMode.OFF.value:
        return {"spec": None, "alpha": alpha}
    prior = args.spec_prior if getattr(args, "spec_prior", None) is not None else (alpha or 0.7)
    k = int(args.max_spec_len)
    fixed = args.spec_fixed_len if getattr(args, "spec_fixed_len", None) is not None else k
    cfg = SpecConfig(
        mode=mode,
        alpha_prior=prior,
        max_spec_len=k,
        fixed_len=fixed,
        online=bool(getattr(args, "spec_online", True)),
        safety_margin=float(getattr(args, "spec_margin", 0.15)),
        uniform_len=bool(getattr(args, "spec_uniform", False)),
    )
    if getattr(args, "policy", None):
        from sloserve.spec.decorate import speculative_policy  # noqa: PLC0415 (loads the registry)

        try:
            args.policy = speculative_policy(args.policy)
        except KeyError:
            pass  # not a registered scheduler (e.g. a disaggregated pair): the caller reports it
    return {"spec": cfg, "alpha": alpha}
