"""SGLang's SchedulePolicy and PrefillAdder, subclassed to follow the sloserve plan.

``SloSchedulePolicy`` orders the waiting queue: the requests the plan prefills this step, in
plan order, then the rest by tier and TTFT deadline. ``SloPrefillAdder`` admits exactly the
planned requests, each capped at its planned token count (SGLang chunks a request that gets
fewer tokens than its prompt), and caps the batch's prefill budget at the plan's total. SGLang
allows one chunked request per batch, so the adder stops after a chunked admission; decode
tokens are mixed in by SGLang itself (``--enable-mixed-chunk``), already deducted from budgets.
"""

from __future__ import annotations

from typing import Callable, Optional

from sglang.srt.managers.schedule_policy import AddReqResult, PrefillAdder, SchedulePolicy

from sloserve.sglang.translate import PlanDecision


class SloSchedulePolicy(SchedulePolicy):
    """``order_fn(rids) -> indices`` comes from the shadow planner; ``before_sort`` lets the
    scheduler plan here on SGLang versions without the ``_should_defer_prefill`` hook."""

    def __init__(
        self,
        *args,
        order_fn: Callable[[list[str]], list[int]],
        before_sort: Optional[Callable[[list, object], None]] = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.order_fn = order_fn
        self.before_sort = before_sort

    @classmethod
    def adopt(cls, policy: SchedulePolicy, order_fn, before_sort=None) -> "SloSchedulePolicy":
        """Turn SGLang's own policy object into ours in place. Its constructor arguments differ
        between the supported SGLang versions; the subclass only adds two attributes."""
        policy.__class__ = cls
        policy.order_fn = order_fn
        policy.before_sort = before_sort
        return policy

    def calc_priority(self, waiting_queue, running_batch=None, *args, **kwargs):
        # SGLang's own pass first: it matches prefixes (prefix_len feeds the shadow's progress
        # and the adder's budget). Then the plan's order replaces its sort, in place.
        result = super().calc_priority(waiting_queue, running_batch, *args, **kwargs)
        if self.before_sort is not None:
            self.before_sort(waiting_queue, running_batch)
        order = self.order_fn([r.rid for r in waiting_queue])
        waiting_queue[:] = [waiting_queue[i] for i in order]
        return result


class SloPrefillAdder(PrefillAdder):
    """Bind a decision with ``SloPrefillAdder.bind(decision)``; SGLang instantiates the class."""

    decision: PlanDecision = PlanDecision()

    @classmethod
    def bind(cls, decision: PlanDecision) -> type["SloPrefillAdder"]:
        return type("BoundSloPrefillAdder", (cls,), {"decision": decision})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        budget = self.decision.prefill_budget_tokens
        if budget <= 0:
            return  # nothing planned: add_one_req admits no one; an ongoing chunk keeps SGLang's size
        self.rem_input_tokens = min(self.rem_input_tokens, budget)
        self.rem_chunk_tokens = budget if self.rem_chunk_tokens is None else min(self.rem_chunk_tokens, budget)

    def _with_cap(self, cap: int, call):
        saved = self.rem_chunk_tokens
        capped = cap if saved is None else min(saved, cap)
        self.rem_chunk_tokens = capped
        try:
            return call()
        finally:
            used = capped - (self.rem_chunk_tokens or 0)
            self.rem_chunk_tokens = None if saved is None else saved - used

    def add_one_req(self, req, has_chunked_req, truncation_align_size):
        want = self.decision.prefill_tokens.get(req.rid)
        if want is None:
            return AddReqResult.OTHER  # the plan does not prefill it now (queue is plan-ordered)
        if self.new_chunked_req is not None:
            return AddReqResult.OTHER  # SGLang tracks one chunked request per batch
        if has_chunked_req and self._would_chunk(req, want):
            # a chunked request still unfinished after this batch holds SGLang's one chunked
            # slot: a second chunk crashed its scheduler (``assert self.chunked_req is None``).
            # Its own default never gets here, the ongoing chunk using the whole chunk budget;
            # ours is capped at the plan's tokens and leaves room.
            return AddReqResult.OTHER
        result = self._with_cap(
            want,
            lambda: super(SloPrefillAdder, self).add_one_req(
                req, has_chunked_req=has_chunked_req, truncation_align_size=truncation_align_size
            ),
        )
        if self.new_chunked_req is not None:
            return AddReqResult.OTHER
        admitted = bool(self.can_run_list) and self.can_run_list[-1] is req
        # SGLang judged the budget with our per-request cap in place; judge it again uncapped.
        return self.budget_state() if admitted else result

    def _would_chunk(self, req, want: int) -> bool:
        """Whether admitting ``req`` now would leave part of its prompt for a later batch: the
        plan gives it less than the rest of its prompt, or the chunk budget left is smaller."""
        rest = len(req.full_untruncated_fill_ids) - req.prefix_len
        return want < rest or (self.rem_chunk_tokens is not None and self.rem_chunk_tokens < rest)

    def add_chunked_req(self, req):
        want = self.decision.prefill_tokens.get(req.rid)
        if want is None:
            return super().add_chunked_req(req)
        # never cap below a page: a zero-token chunk would stall the request in SGLang
        return self._with_cap(max(want, self.page_size), lambda: super(SloPrefillAdder, self).add_chunked_req(req))
