"""SGLang 0.5.23's default scheduler (``Scheduler.get_next_batch_to_run`` + ``PrefillAdder``).

What it does, read from the sglang==0.5.23 wheel (managers/scheduler.py, schedule_policy.py,
schedule_batch.py, mem_cache/prefill_budget.py, arg_groups/fields/schedule.py):

* Prefill first: every step first tries to build a prefill batch; decodes run only when no
  prefill batch could be formed. Mixed chunked prefill (decodes riding along a prefill) is off
  by default (``enable_mixed_chunk``).
* The waiting queue is FCFS (``schedule_policy="fcfs"`` is the 0.5.23 default: the queue is
  not re-sorted); a request that does not fit stops the scan (no overtaking).
* A prefill batch holds at most ``chunked_prefill_size`` tokens (8192 on 60-160 GB GPUs; 4096
  on 20-60 GB; 2048 below 20 GB) and ``max_prefill_tokens`` (16384). A prompt longer than the
  chunk left is cut; only one request is mid-chunk at a time and its next chunk goes first in
  the next prefill batch, so decodes wait while a long prompt is chunked.
* KV admission is optimistic: a new request is admitted iff its prompt plus its (clipped at
  4096) remaining ``max_new_tokens`` plus a page fit the free KV minus the running requests'
  *expected* future tokens, ``remaining max_new_tokens * new_token_ratio``. The ratio starts
  at 0.7 (x ``schedule_conservativeness``), decays linearly to 0.7 * 0.14 over 600 decode
  steps, and is reset when the server goes idle.
* When a decode step does not fit in KV, requests are retracted (KV freed, recompute later,
  appended to the waiting queue) in order of fewest output tokens, then longest prompt,
  until the step fits; the ratio is then re-estimated as
  ``(decoded + 20 * n) / (sum max_new_tokens + 1)`` over the requests kept.
* After a failed admission for lack of KV (``NO_TOKEN``) the batch is marked full and no new
  prefill is tried until a running request leaves.

Not modelled: the radix (prefix) cache, the overlap scheduler, priority scheduling,
``ignore_eos`` reservations unless enabled here, hierarchical caches, speculative decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.request import Request
from sloserve.core.scheduler import register
from sloserve.policies._common import QueuedScheduler, item_for, require_positive

CONTINUE, NO_TOKEN, OTHER = "continue", "no_token", "other"


@dataclass(frozen=True)
class SGLangConfig:
    chunked_prefill_size: int | None = field(
        default=8192,
        metadata={
            "help": "max prefill tokens per batch, longer prompts are chunked; None disables "
            "chunking (SGLang: 8192 on 60-160 GB GPUs, 4096 on 20-60 GB, 2048 below)"
        },
    )
    max_prefill_tokens: int = field(default=16384, metadata={"help": "max input tokens in one prefill batch"})
    max_running_requests: int | None = field(
        default=None, metadata={"help": "max requests in the decode batch (None: limited by KV only)"}
    )
    enable_mixed_chunk: bool = field(
        default=False, metadata={"help": "let running decodes ride along a prefill batch (SGLang --enable-mixed-chunk)"}
    )
    schedule_conservativeness: float = field(
        default=1.0, metadata={"help": "scales the initial new-token ratio (larger reserves more KV for decodes)"}
    )
    init_new_token_ratio: float = field(default=0.7, metadata={"help": "SGLANG_INIT_NEW_TOKEN_RATIO"})
    min_new_token_ratio_factor: float = field(default=0.14, metadata={"help": "SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR"})
    new_token_ratio_decay_steps: int = field(default=600, metadata={"help": "SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS"})
    retract_decode_steps: int = field(default=20, metadata={"help": "SGLANG_RETRACT_DECODE_STEPS"})
    clip_max_new_tokens: int = field(default=4096, metadata={"help": "SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION"})
    ignore_eos: bool = field(
        default=False,
        metadata={
            "help": "requests are sent with ignore_eos: running requests reserve their full remaining "
            "max_new_tokens (ratio 1.0), as in SGLang's bench_serving default"
        },
    )
    page_size: int = field(default=1, metadata={"help": "KV page size in tokens for SGLang's rounding"})

    def __post_init__(self) -> None:
        require_positive(
            self,
            "chunked_prefill_size",
            "max_prefill_tokens",
            "max_running_requests",
            "new_token_ratio_decay_steps",
            "clip_max_new_tokens",
            "page_size",
        )
        if self.retract_decode_steps < 0:
            raise ValueError("retract_decode_steps must be >= 0")
        if not self.schedule_conservativeness >= 0:
            raise ValueError("schedule_conservativeness must be >= 0")
        if not 0 < self.init_new_token_ratio <= 1 or not 0 <= self.min_new_token_ratio_factor <= 1:
            raise ValueError("init_new_token_ratio must be in (0, 1] and min_new_token_ratio_factor in [0, 1]")


class _PrefillBudget:
    """SGLang's PrefillAdder accounting: total KV left, input tokens left, chunk tokens left."""

    def __init__(self, rem_total: float, rem_input: int, rem_chunk: int | None, page: int) -> None:
        self.rem_total = rem_total
        self.rem_input = rem_input
        self.rem_chunk = rem_chunk
        self.page = page

    def ceil_page(self, tokens: int) -> int:
        return -(-tokens // self.page) * self.page

    def state(self) -> str:
        if self.rem_total <= 0:
            return NO_TOKEN
        if self.rem_input <= 0 or (self.rem_chunk is not None and self.rem_chunk <= 0):
            return OTHER
        return CONTINUE

    def charge(self, extend: int, max_new: int) -> None:
        paged = self.ceil_page(extend)
        self.rem_total -= paged + self.page + max_new
        self.rem_input -= paged
        if self.rem_chunk is not None:
            self.rem_chunk -= paged


@register("sglang")
class SGLangScheduler(QueuedScheduler):
    """Prefill-first FCFS with chunked prefill and new-token-ratio KV admission."""

    Config = SGLangConfig

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        c = self.config
        self.init_ratio = min(c.init_new_token_ratio * c.schedule_conservativeness, 1.0)
        self.min_ratio = min(self.init_ratio * c.min_new_token_ratio_factor, 1.0)
        self.ratio_decay = (self.init_ratio - self.min_ratio) / c.new_token_ratio_decay_steps
        self.new_token_ratio = self.init_ratio
        self.chunked_rid: str | None = None
        self.last_prefill: list[str] = []  # merged into the running batch at the next schedule
        self.batch_is_full = False
        self.num_retractions = 0

    # ---- helpers ------------------------------------------------------------------------
    def max_new_tokens(self, req: Request) -> int:
        """What SGLang sees: the request's max_new_tokens (benchmarks set the true length)."""
        return req.max_new_tokens if req.max_new_tokens is not None else req.output_tokens

    def _remaining_new(self, req: Request) -> int:
        return min(max(self.max_new_tokens(req) - req.num_output_tokens, 0), self.config.clip_max_new_tokens)

    def check_length(self, request: Request) -> AdmitDecision | None:
        too_long = super().check_length(request)
        if too_long is not None:
            return too_long
        # PrefillAdder needs prompt + clipped max_new + a page strictly below the free KV even on
        # an empty pool; such a request would otherwise wait forever.
        need = (
            request.prompt_tokens
            + min(self.max_new_tokens(request), self.config.clip_max_new_tokens)
            + self.config.page_size
        )
        if need >= self.kv.capacity_tokens:
            return AdmitDecision(AdmitReason.TOO_LONG, detail=f"{need} tokens >= KV capacity {self.kv.capacity_tokens}")
        return None

    def on_removed(self, request: Request) -> None:
        rid = request.request_id
        if rid in self.running:
            self.batch_is_full = False  # a request left the running batch
        if rid == self.chunked_rid:
            self.chunked_rid = None
        if rid in self.last_prefill:
            self.last_prefill.remove(rid)
        super().on_removed(request)

    # ---- the step -----------------------------------------------------------------------
    def schedule(self, now_s: float) -> StepPlan:
        for rid in self.last_prefill:
            if rid != self.chunked_rid and rid in self.requests:
                self.running.append(rid)
        self.last_prefill = []
        if not self.requests:
            self.new_token_ratio = self.init_ratio  # idle: SGLang resets the ratio
            return StepPlan()
        plan = self._prefill_batch()
        if plan is not None:
            return plan
        return self._decode_batch(now_s)

    def _new_budget(self) -> _PrefillBudget:
        c = self.config
        ratio = 1.0 if c.ignore_eos else self.new_token_ratio
        offset = sum(self._remaining_new(self.requests[rid]) * ratio for rid in self.running)
        mixed = len(self.running) if c.enable_mixed_chunk and c.chunked_prefill_size else 0
        chunk = None if c.chunked_prefill_size is None else c.chunked_prefill_size - mixed
        return _PrefillBudget(self.kv.free_tokens - offset - mixed, c.max_prefill_tokens - mixed, chunk, c.page_size)

    def _prefill_batch(self) -> StepPlan | None:
        if not self.running:
            self.batch_is_full = False
        if (self.batch_is_full or not self.waiting) and self.chunked_rid is None:
            return None
        cap = self.config.max_running_requests
        if cap is not None and len(self.running) >= cap and self.chunked_rid is None:
            self.batch_is_full = True
            return None
        budget = self._new_budget()
        items: list[ScheduledItem] = []
        parked = False
        if self.chunked_rid is not None:
            self.chunked_rid = self._add_chunked(self.requests[self.chunked_rid], budget, items)
            parked = self.chunked_rid is not None and not items
        # Only one request may be mid-chunk: while it is parked for memory, nobody else starts.
        new_chunked = None if parked else self._add_waiting(budget, items)
        if not items:
            return None
        if new_chunked is not None:
            self.chunked_rid = new_chunked
        self.last_prefill = [i.request_id for i in items]
        admitted = set(self.last_prefill)
        self.waiting = type(self.waiting)(rid for rid in self.waiting if rid not in admitted)
        if self.config.enable_mixed_chunk and self.config.chunked_prefill_size:
            items.extend(self._decode_items())
        return StepPlan(tuple(items))

    def _add_chunked(self, req: Request, budget: _PrefillBudget, items: list[ScheduledItem]) -> str | None:
        """Continue the request that is mid-chunk; returns its id while it stays truncated."""
        rem = min(budget.rem_chunk, int(budget.rem_total))
        if rem <= 0:
            rem = budget.rem_chunk  # a continuing chunk must progress to free its KV
        extend = req.remaining_compute_tokens
        new_len = min(extend, rem)
        if new_len <= 0 or not self.reserve(req, new_len):
            return req.request_id  # parked: retry next step
        truncated = extend > new_len
        items.append(item_for(req, new_len))
        budget.charge(new_len, 0 if truncated else min(self.max_new_tokens(req), self.config.clip_max_new_tokens))
        return req.request_id if truncated else None

    def _add_waiting(self, budget: _PrefillBudget, items: list[ScheduledItem]) -> str | None:
        """Admit waiting requests in queue order; returns the id of a newly chunked request."""
        cap = self.config.max_running_requests
        new_chunked = None
        added = 0
        for rid in list(self.waiting):
            if budget.state() == OTHER:
                break
            if cap is not None and added >= cap - len(self.running):
                self.batch_is_full = True
                break
            result, chunked = self._add_one(self.requests[rid], budget, items)
            if chunked:
                new_chunked = rid
            if result != CONTINUE:
                if result == NO_TOKEN:
                    self.batch_is_full = bool(items) or bool(self.running)
                break
            added += 1
        return new_chunked

    def _add_one(self, req: Request, budget: _PrefillBudget, items: list[ScheduledItem]) -> tuple[str, bool]:
        extend = req.remaining_compute_tokens  # no prefix cache: the whole context
        total = extend + self._remaining_new(req) + budget.page
        if not total < budget.rem_total:
            return NO_TOKEN, False
        paged = budget.ceil_page(extend)
        if budget.rem_chunk is None and items and paged >= budget.rem_input:
            return OTHER, False
        max_new = min(self.max_new_tokens(req), self.config.clip_max_new_tokens)
        chunked = False
        if budget.rem_chunk is not None and paged > budget.rem_chunk:
            extend = budget.rem_chunk // budget.page * budget.page
            if extend <= 0:
                return OTHER, False
            chunked, max_new = True, 0
        if not self.reserve(req, extend):
            return NO_TOKEN, False  # block rounding of our KV pool is coarser than SGLang's pages
        items.append(item_for(req, extend))
        budget.charge(extend, max_new)
        return budget.state(), chunked

    def _decode_items(self) -> list[ScheduledItem]:
        items = []
        for rid in self.running:
            req = self.requests[rid]
            if self.reserve(req, req.remaining_compute_tokens):
                items.append(item_for(req, req.remaining_compute_tokens))
        return items

    def _decode_fits(self, rids: list[str]) -> bool:
        need = sum(self.kv.extra_blocks(rid, self.requests[rid].num_tokens) for rid in rids)
        return need <= self.kv.free_blocks

    def _decode_batch(self, now_s: float) -> StepPlan:
        if not self.running:
            return StepPlan()
        events: list[RequestEvent] = []
        if not self._decode_fits(self.running):
            events = self._retract(now_s)
        else:
            self.new_token_ratio = max(self.new_token_ratio - self.ratio_decay, self.min_ratio)
        return StepPlan(tuple(self._decode_items()), tuple(events))

    def _retract(self, now_s: float) -> list[RequestEvent]:
        """ScheduleBatch.retract_decode: retract the least-preferred until the step fits."""
        keep = sorted(
            self.running,
            key=lambda rid: (self.requests[rid].num_output_tokens, -self.requests[rid].prompt_tokens),
            reverse=True,
        )
        events: list[RequestEvent] = []
        first = True
        while first or not self._decode_fits(keep):
            if len(keep) == 1:
                break
            first = False
            victim = self.requests[keep.pop()]
            events.append(self.preempt_to_waiting(victim, now_s, front=False))
            self.num_retractions += 1
        if len(keep) <= 1 and not self._decode_fits(keep):
            # Even one request cannot decode (the mid-chunk prompt holds the rest): SGLang aborts it.
            events.append(self.drop_unservable(self.requests[keep.pop()], now_s, "oom_abort"))
        self.running = keep  # SGLang filters the batch to the kept order
        self.batch_is_full = False
        decoded = sum(self.requests[rid].num_output_tokens for rid in keep)
        max_new = sum(self.max_new_tokens(self.requests[rid]) for rid in keep)
        steps = self.config.retract_decode_steps
        self.new_token_ratio = min(1.0, (decoded + steps * len(keep)) / (max_new + 1))
        return events

    def stats(self) -> dict:
        out = super().stats()
        out["new_token_ratio"] = self.new_token_ratio
        out["num_retractions"] = self.num_retractions
        return out
