"""Registered routing policies (imported by the router registry on first lookup)."""

from sloserve.routing.policies import load, round_robin, slo_proactive, slo_sequential  # noqa: F401
