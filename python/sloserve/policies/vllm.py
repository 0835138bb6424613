"""vLLM baselines: the v0 prefill-first scheduler and the v1 token-budget scheduler.

``vllm-v0`` follows vLLM v0's default ``Scheduler._schedule_default`` without chunked prefill:
if waiting prompts fit (``max_num_batched_tokens``, ``max_num_seqs``, free KV blocks above a
1% watermark) they run as a prefill-only batch of whole prompts, and decodes wait for the
next step; otherwise every running request decodes one token. A decode that cannot get a
KV slot preempts the last running request (recompute), which goes to the waiting front.

``vllm`` (and ``vllm-8192``) follow vLLM v1's ``Scheduler.schedule``: one token budget per
step; running requests first, in running-list order (decodes and continuing chunked prefills
alike), each allocating KV for its new tokens and preempting the *last request of the running
list* when allocation fails; then, only if nothing was preempted this step, waiting requests
in FCFS order, chunked into what is left of the budget, stopping at the first that does not
fit. Preempted requests are prepended to the waiting queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.request import Request
from sloserve.core.scheduler import register
from sloserve.policies._common import QueuedScheduler, item_for, require_positive


# ---------------------------------------------------------------------------------- v0
@dataclass(frozen=True)
class VLLMv0Config:
    max_num_batched_tokens: int | None = field(
        default=None,
        metadata={
            "help": "max prompt tokens in one prefill batch; None = vLLM v0's default "
            "max(max_seq_len, 2048) (whole prompts must fit: no chunking)"
        },
    )
    max_num_seqs: int = field(default=256, metadata={"help": "max running requests"})
    watermark: float = field(
        default=0.01, metadata={"help": "fraction of KV blocks a new prefill must leave free (vLLM v0 block manager)"}
    )

    def __post_init__(self) -> None:
        require_positive(self, "max_num_batched_tokens", "max_num_seqs")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {self.watermark}")


@register("vllm-v0")
class VLLMv0Scheduler(QueuedScheduler):
    """Prefill-first FCFS with whole prompts: decodes stall while prompts are prefilled."""

    Config = VLLMv0Config

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        limit = self.config.max_num_batched_tokens
        self.max_batched_tokens = limit if limit is not None else max(ctx.max_seq_len_tokens or 0, 2048)
        self.watermark_blocks = int(self.config.watermark * self.kv.capacity_blocks)

    def check_length(self, request: Request) -> AdmitDecision | None:
        too_long = super().check_length(request)
        if too_long is not None:
            return too_long
        # vLLM v0 ignores prompts above its prompt limit or that could never pass the watermark.
        if request.prompt_tokens > self.max_batched_tokens:
            return AdmitDecision(
                AdmitReason.TOO_LONG,
                detail=f"prompt {request.prompt_tokens} > max_num_batched_tokens {self.max_batched_tokens}",
            )
        if self.kv.capacity_blocks - self.kv.blocks_for(request.prompt_tokens) < self.watermark_blocks:
            return AdmitDecision(AdmitReason.TOO_LONG, detail="prompt exceeds KV capacity minus watermark")
        return None

    def schedule(self, now_s: float) -> StepPlan:
        events: list[RequestEvent] = []
        prefills = self._schedule_prefills(events, now_s)
        if prefills:
            return StepPlan(tuple(prefills), tuple(events))
        plan = self._schedule_decodes(now_s)
        return StepPlan(plan.items, tuple(events) + plan.events)

    def _schedule_prefills(self, events: list[RequestEvent], now_s: float) -> list[ScheduledItem]:
        items: list[ScheduledItem] = []
        tokens = 0
        num_seqs = len(self.running)
        while self.waiting:
            req = self.requests[self.waiting[0]]
            if self.never_fits(req, self.watermark_blocks):
                events.append(self.drop_unservable(req, now_s, "no_kv"))
                continue
            want = req.remaining_compute_tokens  # whole prompt (plus output on recompute)
            if tokens + want > self.max_batched_tokens and items:
                break  # a lone recompute longer than the limit still runs (see docs)
            if num_seqs + 1 > self.config.max_num_seqs:
                break
            need = self.kv.extra_blocks(req.request_id, req.num_computed_tokens + want)
            if self.kv.free_blocks - need < self.watermark_blocks or not self.reserve(req, want):
                break  # AllocStatus.LATER: FCFS, nobody overtakes
            self.waiting.popleft()
            self.running.append(req.request_id)
            items.append(item_for(req, want))
            tokens += want
            num_seqs += 1
        return items

    def _schedule_decodes(self, now_s: float) -> StepPlan:
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        queue = list(self.running)
        idx = 0
        while idx < len(queue):
            req = self.requests[queue[idx]]
            ok = True
            while not self.reserve(req, req.remaining_compute_tokens):
                if len(queue) - 1 > idx:  # preempt the last running request
                    victim = self.requests[queue.pop()]
                else:  # nothing after us: preempt ourselves
                    victim, ok = req, False
                events.append(self.preempt_to_waiting(victim, now_s, front=True))
                if not ok:
                    break
            if not ok:
                break
            items.append(item_for(req, req.remaining_compute_tokens))
            idx += 1
        return StepPlan(tuple(items), tuple(events))


# ---------------------------------------------------------------------------------- v1
@dataclass(frozen=True)
class VLLMConfig:
    token_budget: int = field(
        default=2048, metadata={"help": "max_num_batched_tokens: tokens computed per step (decodes + prefill chunks)"}
    )
    max_num_seqs: int = field(default=256, metadata={"help": "max running requests"})
    long_prefill_token_threshold: int = field(
        default=0, metadata={"help": "cap on one request's prefill chunk per step (0 = no cap, vLLM's default)"}
    )

    def __post_init__(self) -> None:
        require_positive(self, "token_budget", "max_num_seqs")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0")


@dataclass(frozen=True)
class VLLM8192Config(VLLMConfig):
    token_budget: int = field(
        default=8192, metadata={"help": "max_num_batched_tokens: tokens computed per step (decodes + prefill chunks)"}
    )


@register("vllm")
class VLLMScheduler(QueuedScheduler):
    """vLLM v1: one token budget, running requests first, then chunked new prefills."""

    Config = VLLMConfig

    def _new_tokens(self, req: Request, budget: int) -> int:
        want = req.remaining_compute_tokens
        cap = self.config.long_prefill_token_threshold
        if 0 < cap < want:
            want = cap
        return min(want, budget)

    def schedule(self, now_s: float) -> StepPlan:
        budget = self.config.token_budget
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        idx = 0
        while idx < len(self.running) and budget > 0:
            req = self.requests[self.running[idx]]
            want = self._new_tokens(req, budget)
            if want <= 0:
                idx += 1
                continue
            if not self.reserve_preempting_newest(req, want, now_s, events):
                break
            items.append(item_for(req, want))
            budget -= want
            idx += 1
        if not events:
            budget = self._schedule_waiting(budget, items)
        return StepPlan(tuple(items), tuple(events))

    def _schedule_waiting(self, budget: int, items: list[ScheduledItem]) -> int:
        while self.waiting and budget > 0:
            if len(self.running) >= self.config.max_num_seqs:
                break
            req = self.requests[self.waiting[0]]
            want = self._new_tokens(req, budget)
            if not self.reserve(req, want):
                break  # allocate_slots returned None: FCFS, stop here
            self.waiting.popleft()
            self.running.append(req.request_id)
            items.append(item_for(req, want))
            budget -= want
        return budget


@register("vllm-8192")
class VLLM8192Scheduler(VLLMScheduler):
    """vLLM v1 with max_num_batched_tokens 8192 (vLLM's default on large GPUs)."""

    Config = VLLM8192Config
