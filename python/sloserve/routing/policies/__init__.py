"""Registered routing policies (imported by the router registry on first lookup)."""

from sloserve.routing.policies import round_robin  # noqa: F401
