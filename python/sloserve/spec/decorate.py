"""Speculation for any policy: decorate its decode items with drafts after it built a batch.

A policy that honours ``SchedulerContext.spec`` holds a ``SpecDecorator`` and calls
``plan = self.spec_decorator.decorate(self, plan, now_s)`` at the end of ``schedule`` and
``self.spec_decorator.observe(plan, result, self.requests)`` at the start of ``on_step_done`` (before
the base class pops finished requests). ``speculative(cls)`` builds that subclass for an
existing policy class, so the baselines (fcfs, vllm, sarathi...) run with fixed or goodput
speculation unchanged. The base ``Scheduler.on_step_done`` already advances requests by the
produced tokens, counts the spec statistics and shrinks KV back after rejected drafts.

Modes: ``fixed`` gives every decode ``fixed_len`` positions; ``goodput`` one length per batch
maximizing expected decode tokens per second (SmartSpec-like, SLO-blind); ``adaptive`` the
per-TPOT-tier lengths that maximize decode tokens while the step stays within every tier's
``TPOT * planned tokens`` and ends before the earliest next-token deadline (the policy's own
prefill is kept as it chose it).
"""

from __future__ import annotations

from dataclasses import replace

from sloserve.core.plan import ScheduledItem, StepPlan, StepResult
from sloserve.spec.acceptance import AlphaEstimator
from sloserve.spec.config import SpecConfig, SpecMode, spec_enabled
from sloserve.spec.lengths import TierLoad, constrained_lengths, goodput_length


def is_decode_item(item: ScheduledItem, req) -> bool:
    """A one-token step of a request that has output already: the only kind that can speculate."""
    return (
        item.num_tokens == 1
        and item.spec_draft_tokens == 0
        and req.num_output_tokens >= 1
        and req.remaining_compute_tokens == 1
    )


def draft_room(req) -> int:
    """Most drafts worth verifying: never past the planned end of the output."""
    return max(req.planning_remaining_output - 1, 0)


class SpecDecorator:
    """Adds drafts to a batch's decodes and learns the acceptance rate from the results."""

    def __init__(self, spec: SpecConfig | None, perf) -> None:
        self.spec = spec
        self.perf = perf
        self.enabled = spec_enabled(spec)
        self.estimator = AlphaEstimator.from_config(spec) if spec is not None else None
        self.num_spec_batches = 0
        self.num_batches = 0
        self.num_kv_short = 0

    @classmethod
    def from_ctx(cls, ctx) -> "SpecDecorator":
        return cls(ctx.spec, ctx.perf)

    def alpha_of(self, req) -> float:
        return self.estimator.request_alpha(req.request_id, req.slo_class) if self.estimator else 0.0

    # ---- deciding -------------------------------------------------------------------------
    def lengths(self, decodes: list, other_tokens: int, kv_read: int, now_s: float) -> list[int]:
        """Verified positions for each decode request, by mode."""
        spec = self.spec
        k = spec.max_spec_len
        if spec.mode == SpecMode.FIXED.value:
            return [spec.fixed_len] * len(decodes)
        if spec.mode == SpecMode.GOODPUT.value:
            s = goodput_length(self.perf, [self.alpha_of(r) for r in decodes], other_tokens, k, kv_read)
            return [s] * len(decodes)
        tiers: dict[float, list] = {}
        for r in decodes:
            tiers.setdefault(r.current_tpot_s, []).append(r)
        keys = sorted(tiers)
        loads = [TierLoad(p, len(tiers[p]), min(self.alpha_of(r) for r in tiers[p])) for p in keys]
        limit = min(r.next_token_deadline_s for r in decodes) - now_s
        chosen = constrained_lengths(
            self.perf, loads, other_tokens, k, spec.safety_margin, limit, kv_read, spec.uniform_len
        )
        by_tier = dict(zip(keys, chosen))
        return [by_tier[r.current_tpot_s] for r in decodes]

    def decorate(self, sched, plan: StepPlan, now_s: float) -> StepPlan:
        """The plan with drafts on its decode items, KV reserved for them, spec_steps set."""
        if not self.enabled or plan.is_empty:
            return plan
        self.num_batches += 1
        reqs = sched.requests
        decode_idx = [
            i for i, it in enumerate(plan.items) if it.request_id in reqs and is_decode_item(it, reqs[it.request_id])
        ]
        if not decode_idx:
            return plan
        decodes = [reqs[plan.items[i].request_id] for i in decode_idx]
        other = plan.num_tokens - len(decode_idx)
        kv_read = sum(it.context_tokens for it in plan.items)
        positions = self.lengths(decodes, other, kv_read, now_s)
        items = list(plan.items)
        max_drafts = 0
        for i, req, s in zip(decode_idx, decodes, positions):
            drafts = min(s - 1, draft_room(req))
            while drafts > 0 and not sched.reserve(req, 1 + drafts):
                drafts -= 1  # memory is short: verify fewer drafts rather than preempt anyone
                self.num_kv_short += 1
            if drafts > 0:
                items[i] = replace(items[i], num_tokens=1 + drafts, spec_draft_tokens=drafts)
                max_drafts = max(max_drafts, drafts)
        if max_drafts == 0:
            return plan
        self.num_spec_batches += 1
        return replace(plan, items=tuple(items), spec_steps=max(plan.spec_steps, max_drafts))

    # ---- learning -------------------------------------------------------------------------
    def observe(self, plan: StepPlan, result: StepResult, requests) -> None:
        """Feed every verify step of ``plan`` to the estimator (call before the base class
        advances the requests: it needs the outputs before the step)."""
        if self.estimator is None:
            return
        for item in plan.items:
            if not item.spec_draft_tokens:
                continue
            req = requests.get(item.request_id)
            produced = int(result.produced_tokens.get(item.request_id, 0))
            if req is None or produced <= 0:
                continue
            ended = item.request_id in result.finished
            self.estimator.observe(req.slo_class, req.request_id, item.spec_draft_tokens, produced, ended)
            if ended:
                self.estimator.forget(req.request_id)

    def stats(self) -> dict:
        return {
            "mode": self.spec.mode if self.spec is not None else "off",
            "spec_batches": self.num_spec_batches,
            "batches": self.num_batches,
            "kv_short": self.num_kv_short,
            "alpha": self.estimator.snapshot() if self.estimator is not None else {},
        }


def speculative(cls: type) -> type:
    """A subclass of policy ``cls`` that speculates as ``ctx.spec`` says (same registry name)."""
    if getattr(cls, "handles_spec", False):
        return cls

    class Speculative(cls):  # type: ignore[valid-type, misc]
        handles_spec = True

        def __init__(self, ctx, config=None) -> None:
            super().__init__(ctx, config)
            self.spec_decorator = SpecDecorator.from_ctx(ctx)

        def schedule(self, now_s: float) -> StepPlan:
            return self.spec_decorator.decorate(self, super().schedule(now_s), now_s)

        def on_step_done(self, plan, result, now_s):
            self.spec_decorator.observe(plan, result, self.requests)
            return super().on_step_done(plan, result, now_s)

        def stats(self) -> dict:
            out = super().stats()
            out["spec"] = self.spec_decorator.stats()
            return out

    Speculative.__name__ = f"Speculative{cls.__name__}"
    Speculative.__qualname__ = Speculative.__name__
    return Speculative


def speculative_policy(base: str) -> str:
    """The name of ``<base>+spec``, for drivers that pick policies by name (benchmarks, the CLI):
    a policy registered under that name (``slos-serve+spec``, the planner-integrated
    ``spec.slos``), else ``base`` itself when it speculates by itself, else ``base`` wrapped by
    ``speculative`` and registered now."""
    from sloserve.core.scheduler import SCHEDULERS  # noqa: PLC0415

    name = f"{base}+spec"
    if name in SCHEDULERS.names():  # loads the registry's plugins, spec.slos among them
        return name
    cls = SCHEDULERS.get(base)
    if getattr(cls, "handles_spec", False):
        return base  # the policy speculates by itself
    SCHEDULERS.register(name)(speculative(cls))
    return name
