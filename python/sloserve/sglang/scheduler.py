"""SGLang's Scheduler, subclassed so the sloserve plan decides each step (see docs/sglang.md).

Per SGLang iteration (``_should_defer_prefill`` is its first per-iteration hook): snapshot the
running batch, the chunked request and the waiting queue as plain numbers, feed them to the
shadow policy (``ShadowPlanner.observe``), ask it for the next step (``plan``), and let the
overridden hooks realise that decision: the queue order (``SloSchedulePolicy``), per-request
prefill tokens (``SloPrefillAdder``), a decode-only step (``_should_defer_prefill``), retraction
victims (plugin hook on ``ScheduleBatch._get_decode_retraction_order``) and ``meta_info``.

Determinism across TP ranks: the only non-deterministic input is the clock, so ``now_s`` is
read on the group's first rank and broadcast (SGLang's own ``broadcast_pyobj``); everything
else is computed from identical inputs by identical code.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus

from sglang.srt.managers import scheduler as sglang_scheduler
from sglang.srt.managers.scheduler import Scheduler

from sloserve.perf import get_model
from sloserve.runtime.slo_params import EXPIRED_MESSAGE, SloDefaults, SloParamError, asks_for_ttft
from sloserve.runtime.step_timing import live_policy_options
from sloserve.sglang.config import load_config
from sloserve.sglang.policy import SloPrefillAdder, SloSchedulePolicy
from sloserve.sglang.shadow import ShadowPlanner
from sloserve.sglang.spec_selector import SloSpeculativeParams
from sloserve.sglang.streamer import SloOutputStreamer
from sloserve.sglang.summaries import ENV_SUMMARY_DIR, PlanTimer, write_stats, write_summary
from sloserve.sglang.tier_metrics import SchedulerTierMetrics, finish_type, metrics_enabled
from sloserve.sglang.translate import ReqSnapshot, build_request

log = logging.getLogger(__name__)
SUMMARY_INTERVAL_S = 0.05


# SGLang's abort message for a request it ends outside the output stream (0.5.23; None before)
_MAKE_ABORT_REQ = getattr(sglang_scheduler, "_make_abort_req", None)


def req_snapshot(req, running: bool) -> ReqSnapshot:
    """Plain numbers from an SGLang ``Req`` (attribute names shared by 0.5.16 and 0.5.23)."""
    prompt = len(req.origin_input_ids)
    outputs = len(req.output_ids)
    if running:
        computed = prompt + outputs - 1 if outputs else prompt
    else:
        prefix = getattr(req, "prefix_len", None)
        if prefix is None:
            prefix = len(getattr(req, "prefix_indices", ()) or ())
        computed = min(int(prefix), prompt + outputs)
    # an abort SGLang has decided on (to_finish) or reached (finished_reason): when the request
    # leaves its queues the shadow reports an abort, not a completion
    aborting = any(
        type(getattr(req, name, None)).__name__ == "FINISH_ABORT" for name in ("to_finish", "finished_reason")
    )
    return ReqSnapshot(req.rid, prompt, outputs, computed, running, aborting)


def attach_slo(req, now_s: float, zero_load_prefill_s, defaults: SloDefaults):
    """Build and attach the sloserve request for an SGLang ``Req`` (once)."""
    core = getattr(req, "sloserve_request", None)
    if core is None:
        sp = req.sampling_params
        core = build_request(
            req.rid,
            len(req.origin_input_ids),
            sp.max_new_tokens or 1,
            getattr(sp, "custom_params", None),
            now_s,
            zero_load_prefill_s,
            defaults,
        )
        req.sloserve_request = core
    return core


class SloScheduler(Scheduler):
    """Drop-in replacement registered by the plugin for ``sglang...scheduler.Scheduler``."""

    _slo_shadow: ShadowPlanner | None = None
    _slo_now_s: float = 0.0
    _slo_planned: bool = False
    _slo_summary_at: float = 0.0
    _slo_timer: PlanTimer = PlanTimer()  # replaced per instance in _slo()
    _slo_tiers: SchedulerTierMetrics | None = None
    _slo_tiers_decided: bool = False

    # ---- setup ------------------------------------------------------------------------
    def _slo(self) -> ShadowPlanner:
        if self._slo_shadow is None:
            cfg = load_config()
            self._slo_cfg = cfg
            self._slo_perf = get_model(cfg.perf_model)
            self._slo_defaults = SloDefaults(ttft_slowdown=cfg.default_ttft_slowdown, tpot_ms=cfg.default_tpot_ms)
            capacity = cfg.kv_capacity_tokens or int(getattr(self, "max_total_num_tokens", 0) or 0) or 1 << 20
            replica = self._slo_parallel_rank("dp_rank")
            self._slo_shadow = ShadowPlanner.create(
                cfg.policy,
                live_policy_options(cfg.policy, dict(cfg.policy_options)),
                self._slo_perf,
                capacity,
                cfg.block_size_tokens,
                getattr(self, "max_req_len", None),
                replica,
            )
            self._slo_now_s = self._slo_clock()
            self._slo_timer = PlanTimer()
            log.info(
                "sloserve policy %s on replica %d (KV %d tokens, perf %s)",
                cfg.policy,
                replica,
                capacity,
                cfg.perf_model,
            )
        return self._slo_shadow

    def _slo_parallel_rank(self, name: str) -> int:
        """A rank (``dp_rank``, ``attn_tp_rank``) from SGLang's runtime context (0.5.23), else
        the scheduler attribute of that name (0.5.16)."""
        try:
            from sglang.srt.runtime_context import get_parallel

            value = getattr(get_parallel(), name)
        except (ImportError, AttributeError, RuntimeError):
            value = getattr(self, name, None)
        return int(value or 0)

    def init_schedule_policy(self):
        super().init_schedule_policy()
        SloSchedulePolicy.adopt(self.policy, self._slo().waiting_order, self._slo_before_sort)

    def get_prefill_adder_class(self):
        return SloPrefillAdder.bind(self._slo().decision)

    def get_output_streamer_class(self):
        return SloOutputStreamer.bind(self._slo_meta)

    def _slo_meta(self, req, now_s: float) -> dict:
        """A request's SLO report as SGLang emits its tokens; its final one feeds the tier metrics."""
        done = req.finished()
        report = self._slo().report(req.rid, len(req.output_ids), done, now_s)
        tiers = self._slo_tier_metrics()
        if done and tiers is not None:
            tiers.finished(report, finish_type(req))
        return report

    def _slo_tier_metrics(self) -> SchedulerTierMetrics | None:
        """sloserve's per-tier series, when SGLang's metrics are on for this scheduler (decided on
        first use: SGLang's metrics reporter exists only once the constructor has run)."""
        if not self._slo_tiers_decided:
            self._slo_tiers_decided = True
            self._slo_tiers = SchedulerTierMetrics() if metrics_enabled(self) else None
        return self._slo_tiers

    # ---- the clock, identical on every rank ---------------------------------------------
    def _slo_clock(self) -> float:
        now = time.time()  # Unix time: the HTTP front stamps slo_arrival_s in the same base
        group = getattr(self, "tp_group", None)
        if getattr(self, "tp_size", 1) > 1 and group is not None and getattr(group, "world_size", 1) > 1:
            from sglang.srt.utils import broadcast_pyobj

            now = broadcast_pyobj([now], group.rank, group.cpu_group, src=group.ranks[0])[0]
        return float(now)

    # ---- arrivals ----------------------------------------------------------------------
    def process_input_requests(self, recv_reqs):
        # Arrivals are stamped with this clock: refresh it (an idle scheduler sleeps between
        # iterations). recv_reqs is identical on every TP rank, so the broadcast is collective.
        if recv_reqs:
            self._slo()
            self._slo_now_s = self._slo_clock()
        return super().process_input_requests(recv_reqs)

    def _create_generation_req(self, recv_req, *args, **kwargs):
        req = super()._create_generation_req(recv_req, *args, **kwargs)
        self._slo()  # perf model and defaults
        try:
            attach_slo(req, self._slo_now_s, self._slo_perf.zero_load_prefill_s, self._slo_defaults)
        except SloParamError as exc:
            req.set_finish_with_abort(str(exc))  # HTTP 400 with the field name
        return req

    def _add_request_to_queue(self, req, is_retracted: bool = False):
        result = super()._add_request_to_queue(req, is_retracted)
        if is_retracted or req.finished() or getattr(req, "to_finish", None) is not None:
            return result  # an aborted request is let through by the plan (with_aborted), unplanned
        shadow = self._slo()
        if req.rid in shadow.known or not (self.waiting_queue and self.waiting_queue[-1] is req):
            return result  # known already, or SGLang refused it itself (e.g. --max-queued-requests)
        try:
            core = attach_slo(req, self._slo_now_s, self._slo_perf.zero_load_prefill_s, self._slo_defaults)
        except SloParamError as exc:  # SGLang versions without _create_generation_req
            req.set_finish_with_abort(str(exc))
            return result
        decision = shadow.add(core, self._slo_now_s, asks_for_ttft(getattr(req.sampling_params, "custom_params", None)))
        log.debug("sloserve %s: %s (%s)", req.rid, decision.reason.value, core.tier.value)
        if (tiers := self._slo_tier_metrics()) is not None:
            tiers.admission(core.tier.value, decision.reason.value, not decision.reason.accepted)
        if not decision.accepted:  # e.g. unadmitted=reject: refused now, never queued
            detail = f": {decision.detail}" if decision.detail else ""
            self._slo_refuse(req, f"not admitted ({decision.reason.value}{detail}); retry later")
        return result

    def _slo_refuse(self, req, message: str, queued: bool = True, status=HTTPStatus.TOO_MANY_REQUESTS) -> None:
        """End a queued request at once with HTTP ``status``, without running it (as SGLang's own
        --max-queued-requests does): an overloaded host spends no engine step on it."""
        if queued:
            self.waiting_queue.remove(req)
        if (tiers := self._slo_tier_metrics()) is not None:  # SGLang's streamer never sees it end
            tiers.finished(self._slo().report(req.rid, 0, True, self._slo_now_s), "abort")
        reason = {"type": "abort", "status_code": status, "message": message}
        release = getattr(self, "_release_aborted_request", None)
        if release is None or _MAKE_ABORT_REQ is None:  # SGLang versions without them: one-token abort
            req.set_finish_with_abort(message, status_code=status)
            self.waiting_queue.append(req)
            return
        release(req)
        self.send_abort_output(_MAKE_ABORT_REQ(req, finished_reason=reason), req)

    def _slo_expire_best_effort(self, shadow: ShadowPlanner, now: float) -> None:
        """Best effort still without a first token at its TTFT deadline ends with 429: its SLO is
        lost (a client would give up), and served late it takes the CPU of an overloaded host from
        admitted requests (issue 16, docs/sglang.md). The chunked request is mid-prefill: kept."""
        expired = set(shadow.expired_best_effort((r.rid for r in self.waiting_queue), now))
        if not expired:
            return
        shadow.expire(expired)
        ending = [r for r in self.waiting_queue if r.rid in expired]
        self.waiting_queue[:] = [r for r in self.waiting_queue if r.rid not in expired]
        for req in ending:
            self._slo_refuse(req, EXPIRED_MESSAGE, queued=False)

    # ---- per-iteration planning ----------------------------------------------------------
    def _slo_step(self, running_batch) -> None:
        shadow = self._slo()
        now = self._slo_clock()
        self._slo_now_s = now
        if self._slo_cfg.best_effort_expiry:
            self._slo_expire_best_effort(shadow, now)
        running = [r for r in getattr(running_batch, "reqs", []) if not r.finished()]
        waiting = list(self.waiting_queue)
        chunked = getattr(self, "chunked_req", None)
        if chunked is not None and all(r is not chunked for r in running):
            waiting.append(chunked)
        if not running and not waiting and not shadow.known:
            return
        started = time.perf_counter()
        aborted = {r.rid: len(r.origin_input_ids) for r in waiting if getattr(r, "to_finish", None) is not None}
        snaps = [req_snapshot(r, True) for r in running] + [req_snapshot(r, False) for r in waiting]
        shadow.observe(snaps, now)
        shadow.plan(now, [r.rid for r in waiting], bool(running), aborted)
        tpot = shadow.tightest_tpot_s(r.rid for r in running)
        kv_read = sum(s.num_computed_tokens for s in snaps if s.running)
        if self._slo_cfg.spec_slo_aware:
            SloSpeculativeParams.publish(tpot, kv_read)
        # SGLang's utilization metric divides running requests by this (it has no setter upstream):
        # how many one-token decodes fit in a step of the tightest TPOT at today's KV read.
        tpot_s = tpot if tpot is not None else self._slo_cfg.default_tpot_ms / 1e3
        self.max_running_requests_under_SLO = max(self._slo_perf.max_decodes_within_s(tpot_s, kv_read), 1)
        self._slo_timer.add(time.perf_counter() - started)
        # An emptied replica publishes at once: routers and tests must not see a stale load.
        self._slo_publish_summary(now, force=not shadow.known)

    def _slo_publish_summary(self, now: float, force: bool = False) -> None:
        directory = os.environ.get(ENV_SUMMARY_DIR)
        if not directory or (not force and now - self._slo_summary_at < SUMMARY_INTERVAL_S):
            return
        if self._slo_parallel_rank("attn_tp_rank") != 0:
            return
        self._slo_summary_at = now
        try:
            summary = self._slo().summary(now)
            write_summary(directory, summary)
            shadow = self._slo()
            stats = {**self._slo_timer.stats(), **shadow.calibration(), "reasons": shadow.reasons()}
            write_stats(directory, summary.replica_id, stats)
        except OSError as exc:  # a full /dev/shm must not stop serving
            log.warning("sloserve: cannot publish plan summary: %s", exc)

    def _should_defer_prefill(self, running_batch) -> bool:
        self._slo_step(running_batch)
        self._slo_planned = True
        if self._slo().decision.defer_prefill:
            return True
        return super()._should_defer_prefill(running_batch)

    def _slo_before_sort(self, waiting_queue, running_batch) -> None:
        # SGLang versions without _should_defer_prefill plan here instead.
        if not self._slo_planned:
            self._slo_step(running_batch)
        self._slo_planned = False
