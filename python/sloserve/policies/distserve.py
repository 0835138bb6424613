"""DistServe: prefill and decode on separate replicas with a KV hand-off between them.

Follows DistServe's ``ContextStageFCFSScheduler`` and ``DecodingStageFCFSScheduler``:

* ``distserve-prefill`` runs prefill-only FCFS batches of whole prompts, up to
  ``max_batch_size`` requests and ``max_tokens_per_batch`` prompt tokens, while the prompts'
  KV fits; a prefilled request keeps its KV until the driver hands it over
  (``scheduler.release(request_id)``), as DistServe keeps it until the decode side pulls it.
* ``distserve-decode`` accepts requests that already have their first token (KV for
  ``num_tokens`` is reserved on arrival, or as soon as memory frees, in FCFS order) and runs
  continuous-batching decode steps over them. When a decode cannot get a KV slot the last
  request of the batch is preempted; DistServe swaps it to CPU memory, we recompute it (the
  only prefill-like work a decode replica ever does).

The simulator builds ``prefill_replicas`` prefill and ``decode_replicas`` decode replicas when
the user asks for policy ``distserve`` (``DISAGGREGATED``), with ``DistServeConfig`` read from
the policy options, and delays each hand-off by ``kv_transfer_s(num_tokens)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.registry import build_config
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import register
from sloserve.core.topology import register_topology
from sloserve.policies._common import QueuedScheduler, item_for, require_positive


@register_topology("distserve")
@dataclass(frozen=True)
class DistServeConfig:
    """Options of the ``distserve`` policy: replica split, hand-off cost, per-role limits (a
    registered topology, core/topology.py: the simulator builds the replicas from it)."""

    prefill_policy: ClassVar[str] = "distserve-prefill"
    decode_policy: ClassVar[str] = "distserve-decode"

    prefill_replicas: int = field(default=1, metadata={"help": "replicas (GPU groups) running prefill"})
    decode_replicas: int = field(default=1, metadata={"help": "replicas (GPU groups) running decode"})
    kv_transfer_s_per_token: float = field(
        default=3.3e-6,
        metadata={
            "help": "seconds to move one token's KV from a prefill to a decode replica; default: "
            "OPT-13B (~0.8 MB/token in fp16) over NVLink at ~250 GB/s effective"
        },
    )
    prefill_max_batch_size: int = field(default=128, metadata={"help": "prefill role: max requests per batch"})
    prefill_max_tokens_per_batch: int = field(
        default=8192, metadata={"help": "prefill role: max prompt tokens per batch"}
    )
    decode_max_batch_size: int = field(default=1024, metadata={"help": "decode role: max requests per batch"})

    def __post_init__(self) -> None:
        require_positive(
            self,
            "prefill_replicas",
            "decode_replicas",
            "prefill_max_batch_size",
            "prefill_max_tokens_per_batch",
            "decode_max_batch_size",
        )
        if not self.kv_transfer_s_per_token >= 0:
            raise ValueError(f"kv_transfer_s_per_token must be >= 0, got {self.kv_transfer_s_per_token}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "DistServeConfig":
        return build_config(cls, options, "policy 'distserve'")

    @property
    def num_replicas(self) -> int:
        return self.prefill_replicas + self.decode_replicas

    def kv_transfer_s(self, num_tokens: int) -> float:
        return self.kv_transfer_s_per_token * num_tokens

    def prefill_options(self) -> dict:
        return {
            "max_batch_size": self.prefill_max_batch_size,
            "max_tokens_per_batch": self.prefill_max_tokens_per_batch,
        }

    def decode_options(self) -> dict:
        return {"max_batch_size": self.decode_max_batch_size}


# name -> (prefill policy, decode policy), for callers that list disaggregated names
DISAGGREGATED = {"distserve": (DistServeConfig.prefill_policy, DistServeConfig.decode_policy)}


@dataclass(frozen=True)
class PrefillRoleConfig:
    max_batch_size: int = field(default=128, metadata={"help": "max requests per prefill batch"})
    max_tokens_per_batch: int = field(default=8192, metadata={"help": "max prompt tokens per prefill batch"})

    def __post_init__(self) -> None:
        require_positive(self, "max_batch_size", "max_tokens_per_batch")


@dataclass(frozen=True)
class DecodeRoleConfig:
    max_batch_size: int = field(default=1024, metadata={"help": "max requests per decode batch"})

    def __post_init__(self) -> None:
        require_positive(self, "max_batch_size")


@register("distserve-prefill")
class DistServePrefillScheduler(QueuedScheduler):
    """Whole-prompt FCFS prefill batches; ``running`` holds prefilled requests awaiting hand-off."""

    Config = PrefillRoleConfig

    def check_length(self, request: Request) -> AdmitDecision | None:
        too_long = super().check_length(request)
        if too_long is None and request.prompt_tokens > self.config.max_tokens_per_batch:
            return AdmitDecision(
                AdmitReason.TOO_LONG,
                detail=f"prompt {request.prompt_tokens} > max_tokens_per_batch {self.config.max_tokens_per_batch}",
            )
        return too_long

    def schedule(self, now_s: float) -> StepPlan:
        items: list[ScheduledItem] = []
        tokens = 0
        while self.waiting and len(items) < self.config.max_batch_size:
            req = self.requests[self.waiting[0]]
            want = req.remaining_compute_tokens
            if tokens + want > self.config.max_tokens_per_batch or not self.reserve(req, want):
                break
            self.waiting.popleft()
            self.running.append(req.request_id)
            items.append(item_for(req, want))
            tokens += want
        return StepPlan(tuple(items))


@register("distserve-decode")
class DistServeDecodeScheduler(QueuedScheduler):
    """Continuous-batching decode of handed-over requests; ``waiting`` = not yet accepted."""

    Config = DecodeRoleConfig

    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        if request.num_output_tokens < 1:
            return AdmitDecision(AdmitReason.REJECTED, detail="a decode replica takes requests after their prefill")
        request.tier = Tier.SLO
        rid = request.request_id
        # Accept at once (KV for the whole context) unless someone is already waiting for memory.
        if (
            not self.waiting
            and len(self.running) < self.config.max_batch_size
            and self.kv.grow(rid, request.num_tokens)
        ):
            self.running.append(rid)
        else:
            self.waiting.append(rid)
        return AdmitDecision(AdmitReason.QUEUED)

    def _accept_waiting(self) -> None:
        while self.waiting and len(self.running) < self.config.max_batch_size:
            req = self.requests[self.waiting[0]]
            if not self.kv.grow(req.request_id, req.num_tokens):
                break
            self.waiting.popleft()
            self.running.append(req.request_id)

    def schedule(self, now_s: float) -> StepPlan:
        self._accept_waiting()
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        idx = 0
        while idx < len(self.running):
            req = self.requests[self.running[idx]]
            want = req.remaining_compute_tokens  # 1, or the whole context after a preemption
            if not self.reserve_preempting_newest(req, want, now_s, events):
                break
            items.append(item_for(req, want))
            idx += 1
        return StepPlan(tuple(items), tuple(events))
