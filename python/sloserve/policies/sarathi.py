"""Sarathi-Serve: a fixed token budget per step, decode-first, stall-free chunked prefill.

Follows ``SarathiScheduler._schedule`` of the Sarathi-Serve code: the running list is kept in
arrival order; every running decode gets its token first (a decode that cannot get a KV slot
preempts the last running request, recompute, to the waiting front); then running requests
still in their prompt continue their chunks; then waiting requests are admitted in FCFS
order while the batch has tokens left, each allocating KV for its *whole* prompt on
admission (so a started prefill never runs out of memory), stopping at the first that does
not fit. The chunk of each prefill is ``budget - tokens already in the batch``.

The budget (the paper's chunk size) is an int, or ``"auto"``: the largest batch whose
predicted time (``ctx.perf.max_tokens_within_s``) fits the tightest TPOT SLO among resident
requests, re-evaluated every step; 512 tokens when nothing is resident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.request import Request
from sloserve.core.scheduler import register
from sloserve.policies._common import QueuedScheduler, item_for, require_positive

FALLBACK_BUDGET_TOKENS = 512


@dataclass(frozen=True)
class SarathiConfig:
    token_budget: int | str = field(
        default="auto",
        metadata={
            "help": "tokens per step (Sarathi's chunk size): an int such as 512 or 2048, or 'auto' = "
            "the largest batch whose predicted time fits the tightest resident TPOT SLO"
        },
    )
    max_num_seqs: int = field(default=128, metadata={"help": "max running requests (Sarathi-Serve default)"})
    min_auto_budget: int = field(
        default=128, metadata={"help": "floor of the 'auto' budget when even a small batch misses the TPOT SLO"}
    )
    watermark: float = field(
        default=0.01, metadata={"help": "fraction of KV blocks a newly admitted prompt must leave free"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.token_budget, str):
            if self.token_budget != "auto":
                raise ValueError(f"token_budget must be an int >= 1 or 'auto', got {self.token_budget!r}")
        else:
            require_positive(self, "token_budget")
        require_positive(self, "max_num_seqs", "min_auto_budget")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {self.watermark}")


@dataclass(frozen=True)
class Sarathi512Config(SarathiConfig):
    token_budget: int | str = field(default=512, metadata={"help": "tokens per step (chunk size)"})


@dataclass(frozen=True)
class Sarathi2048Config(SarathiConfig):
    token_budget: int | str = field(default=2048, metadata={"help": "tokens per step (chunk size)"})


@register("sarathi")
class SarathiScheduler(QueuedScheduler):
    """Decode-first, stall-free batching under a fixed token budget."""

    Config = SarathiConfig

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        self.watermark_blocks = int(self.config.watermark * self.kv.capacity_blocks)
        self.last_budget_tokens = 0  # exposed for tests and stats

    def check_length(self, request: Request) -> AdmitDecision | None:
        too_long = super().check_length(request)
        if (
            too_long is None
            and self.kv.capacity_blocks - self.kv.blocks_for(request.prompt_tokens) < self.watermark_blocks
        ):
            return AdmitDecision(AdmitReason.TOO_LONG, detail="prompt exceeds KV capacity minus watermark")
        return too_long

    def budget_tokens(self) -> int:
        """This step's token budget (fixed, or derived from the tightest resident TPOT)."""
        if self.config.token_budget != "auto":
            return int(self.config.token_budget)
        if not self.requests:
            return FALLBACK_BUDGET_TOKENS
        tightest = min(r.min_tpot_s for r in self.requests.values())
        # Attention reads the resident context, so a roofline model shrinks the budget as it grows.
        kv_read = sum(self.requests[rid].num_computed_tokens for rid in self.running)
        # and a model with a per-request term charges the running requests and one chunk
        fit = self.ctx.perf.max_tokens_within_s(tightest, 0, kv_read, num_requests=len(self.running) + 1)
        return max(int(fit), self.config.min_auto_budget)

    def schedule(self, now_s: float) -> StepPlan:
        budget = self.budget_tokens()
        self.last_budget_tokens = budget
        # Sarathi sorts the running list by arrival each step (FCFS policy).
        self.running.sort(key=lambda rid: (self.requests[rid].arrival_s, rid))
        items, events, prefilling = self._schedule_decodes(budget, now_s)
        used = sum(i.num_tokens for i in items)
        for req in prefilling:  # KV for the whole prompt is already held
            chunk = min(req.remaining_compute_tokens, budget - used)
            if chunk <= 0:
                break
            items.append(item_for(req, chunk))
            used += chunk
        self._admit_waiting(budget, used, items, events, now_s)
        return StepPlan(tuple(items), tuple(events))

    def _schedule_decodes(
        self, budget: int, now_s: float
    ) -> tuple[list[ScheduledItem], list[RequestEvent], list[Request]]:
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        prefilling: list[Request] = []
        idx = 0
        while idx < len(self.running):
            req = self.requests[self.running[idx]]
            idx += 1
            if req.is_prefilling:
                prefilling.append(req)
                continue
            if len(items) >= budget:
                continue  # never exceed the budget (see docs/baselines.md)
            if self.reserve_preempting_newest(req, 1, now_s, events):
                items.append(item_for(req, 1))
            else:
                idx -= 1  # req itself was preempted: the list shrank under us
        return items, events, prefilling

    def _admit_waiting(
        self, budget: int, used: int, items: list[ScheduledItem], events: list[RequestEvent], now_s: float
    ) -> None:
        while self.waiting and used < budget and len(self.running) < self.config.max_num_seqs:
            req = self.requests[self.waiting[0]]
            if self.never_fits(req, self.watermark_blocks):
                events.append(self.drop_unservable(req, now_s, "no_kv"))
                continue
            whole = req.remaining_compute_tokens
            need = self.kv.extra_blocks(req.request_id, req.num_computed_tokens + whole)
            if self.kv.free_blocks - need < self.watermark_blocks or not self.reserve(req, whole):
                break  # can_allocate failed: FCFS, nobody overtakes
            self.waiting.popleft()
            self.running.append(req.request_id)
            chunk = min(whole, budget - used)
            items.append(item_for(req, chunk))
            used += chunk


@register("sarathi-512")
class Sarathi512Scheduler(SarathiScheduler):
    Config = Sarathi512Config


@register("sarathi-2048")
class Sarathi2048Scheduler(SarathiScheduler):
    Config = Sarathi2048Config
