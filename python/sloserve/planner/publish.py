"""What a slos-serve replica publishes to routers: admitted requests per class, the last plan's
slack, the prefill backlog and rate, and the spare prefill curve (planner/spare.py) for
summary-only routers (docs/routing.md)."""

from __future__ import annotations

import math

from sloserve.core.plan import ReplicaSummary
from sloserve.planner.planning import STRETCH_MIN
from sloserve.planner.spare import Stretch, spare_curve, spare_step_s

# Step length assumed for the published prefill rate when no SLO-tier decode sets one.
SUMMARY_IDLE_STEP_S = 0.1


class SummaryPublisher:
    def __init__(self, config, perf, tiers, planner) -> None:
        self.config, self.perf, self.tiers, self.planner = config, perf, tiers, planner

    def summary(self, base: ReplicaSummary, requests, now_s: float, publish_spare: bool) -> ReplicaSummary:
        """``base`` (the scheduler's common fields) enriched with the tiers' plan."""
        slo = self.tiers.slo
        by_tier: dict[str, int] = {}
        for r in slo.values():
            by_tier[r.slo_class] = by_tier.get(r.slo_class, 0) + 1
        slack = self.tiers.slack_s if slo else math.inf
        backlog = sum(r.remaining_compute_tokens for r in requests.values() if r.num_output_tokens == 0)
        return ReplicaSummary(
            base.replica_id,
            now_s,
            base.num_requests,
            base.num_waiting,
            base.outstanding_tokens,
            base.free_kv_tokens,
            base.kv_capacity_tokens,
            by_tier,
            slack,
            True,
            prefill_backlog_tokens=backlog,
            prefill_tokens_per_s=self.prefill_rate_tps(),
            spare_prefill_tokens=self.spare_prefill(now_s) if publish_spare else (),
        )

    def spare_prefill(self, now_s: float) -> tuple[tuple[float, int], ...]:
        """Spare prefill tokens by horizon after ``now_s`` on the grids an arrival is planned on
        (planner/spare.py; idle: steps of ``SUMMARY_IDLE_STEP_S`` at the full batch rate)."""
        if self.config.admit_all:
            return ()  # no admission control: nothing to promise
        tiers, planner = self.tiers, self.planner
        view = tiers.view()
        step = spare_step_s(tiers.step_len_s, view.min_tpot_s, planner.fixed_step_s, SUMMARY_IDLE_STEP_S)
        start = tiers.plan_start_s(now_s)
        fixed = planner.fixed_tokens
        stretch = Stretch(self.config.max_step_s, STRETCH_MIN) if self.config.stretch_steps and fixed is None else None
        kv = planner.kv_read(view, [])  # the residents' KV read, as the admission grids count it
        return spare_curve(
            view,
            now_s,
            stretch=stretch,
            grid_for=lambda due, end: planner.grid(start, step, due, fixed if end is None else None, end, kv),
        )

    def prefill_rate_tps(self) -> float:
        """Prefill tokens per second left beside the admitted decodes, at the current step length
        (what a router without ``can_admit`` uses to judge whether a prompt meets its TTFT)."""
        step_s = self.tiers.step_len_s or SUMMARY_IDLE_STEP_S
        decoding = [r for r in self.tiers.slo.values() if r.num_output_tokens > 0]
        kv_read = sum(r.num_tokens for r in decoding)
        room = self.perf.max_tokens_within_s(step_s, 0, kv_read, num_requests=len(decoding) + 1) - len(decoding)
        return max(room, 0) / step_s
