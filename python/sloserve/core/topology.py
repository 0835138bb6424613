"""Disaggregated topologies: a policy name served by prefill replicas that hand each request to
decode replicas after its first token (DistServe).

A topology is a config class registered under the user-facing policy name; it names its two
role policies and builds itself from the policy options. Drivers (the simulator) look the name
up here instead of checking policy names: adding a disaggregated policy is one registration.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Protocol

from sloserve.core.registry import Registry


class Topology(Protocol):
    """What a driver needs from a registered topology (a frozen config dataclass)."""

    prefill_policy: ClassVar[str]
    decode_policy: ClassVar[str]
    prefill_replicas: int
    decode_replicas: int

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "Topology": ...

    def prefill_options(self) -> dict: ...

    def decode_options(self) -> dict: ...

    def kv_transfer_s(self, num_tokens: int) -> float: ...


TOPOLOGIES: Registry = Registry("topology", plugins=("sloserve.policies",))
register_topology = TOPOLOGIES.register


def find_topology(policy: str) -> type | None:
    """The topology registered under ``policy``, or None for a policy served on mixed replicas."""
    return TOPOLOGIES.get(policy) if policy in TOPOLOGIES.names() else None


def disaggregated_names() -> dict[str, tuple[str, str]]:
    """Every registered topology: name -> (prefill policy, decode policy)."""
    return {n: (TOPOLOGIES.get(n).prefill_policy, TOPOLOGIES.get(n).decode_policy) for n in TOPOLOGIES.names()}
