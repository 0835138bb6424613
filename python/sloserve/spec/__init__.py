"""Speculative decoding: acceptance model, online alpha estimation, length choice, planner, CLI.

Pure (standard library and numpy). ``sloserve.spec.planner`` builds on ``sloserve.planner.batch``
and is imported on demand so that importing this package never pulls the planner in.
"""

from sloserve.spec.acceptance import AlphaEstimator, expected_tokens, planned_tokens, step_observation
from sloserve.spec.config import SpecConfig, SpecMode, add_spec_arguments, spec_enabled, spec_from_args
from sloserve.spec.decorate import SpecDecorator, speculative, speculative_policy
from sloserve.spec.lengths import LengthChoice, TierLoad, choose_tier_lengths, constrained_lengths, goodput_length

__all__ = [
    "AlphaEstimator",
    "LengthChoice",
    "SpecConfig",
    "SpecDecorator",
    "SpecMode",
    "TierLoad",
    "add_spec_arguments",
    "choose_tier_lengths",
    "constrained_lengths",
    "expected_tokens",
    "goodput_length",
    "planned_tokens",
    "spec_enabled",
    "spec_from_args",
    "speculative",
    "speculative_policy",
    "step_observation",
]
