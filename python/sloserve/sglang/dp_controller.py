"""SGLang's DataParallelController, subclassed to dispatch with a sloserve routing policy.

The router sees each DP rank through ``SnapshotReplicaView``: SGLang's per-rank load snapshot
(``LoadSnapshot``: running/waiting requests, KV usage) merged with the replica's published plan
summary (tiers, slack), if a fresh one exists. Requests pinned by ``routed_dp_rank`` keep
SGLang's direct routing. A router's best-effort verdict travels in ``custom_params``.

The event loop waits on the tokenizer's socket instead of spinning: SGLang 0.5.23's loop polls
it without sleeping and held a core (80% of one, measured during a DP test on the 2-core CI
machine), taken from the engines on a CPU host.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Iterable, Mapping

import zmq
from sglang.srt.managers import data_parallel_controller as dpc

from sloserve.core.plan import ReplicaSummary
from sloserve.perf import get_model
from sloserve.routing.base import create_router
from sloserve.runtime.slo_params import SloDefaults, SloParamError
from sloserve.sglang.config import load_config
from sloserve.sglang.summaries import ENV_SUMMARY_DIR, SnapshotReplicaView, read_summaries
from sloserve.sglang.translate import build_request

log = logging.getLogger(__name__)
PLAN_SUMMARY_MAX_AGE_S = 1.0  # older plan summaries are ignored (the replica may be stuck)
IDLE_WAIT_MS = 100  # longest wait for a request before the watchdog is fed again


def summary_from_load(load, plan: ReplicaSummary | None, now_s: float) -> ReplicaSummary:
    """A ReplicaSummary from SGLang's ``LoadSnapshot``, enriched by a fresh plan summary."""
    capacity = int(load.max_total_num_tokens or 0)
    free = max(capacity - int(load.num_used_tokens or 0), 0)
    base = ReplicaSummary(
        replica_id=int(load.dp_rank),
        time_s=now_s,
        num_requests=int(load.num_running_reqs + load.num_waiting_reqs),
        num_waiting=int(load.num_waiting_reqs),
        outstanding_tokens=int(load.num_waiting_uncached_tokens or 0),
        free_kv_tokens=free,
        kv_capacity_tokens=capacity,
    )
    if plan is None or now_s - plan.time_s > PLAN_SUMMARY_MAX_AGE_S:
        return base
    # SGLang's counters are fresher for load; the plan knows tiers, slack and planned work.
    return dataclasses.replace(
        plan,
        time_s=now_s,
        num_requests=base.num_requests,
        num_waiting=base.num_waiting,
        free_kv_tokens=base.free_kv_tokens or plan.free_kv_tokens,
        kv_capacity_tokens=base.kv_capacity_tokens or plan.kv_capacity_tokens,
        outstanding_tokens=max(plan.outstanding_tokens, base.outstanding_tokens),
    )


def build_views(
    loads: Iterable, plans: Mapping[int, ReplicaSummary], active: Iterable[int], now_s: float
) -> list[SnapshotReplicaView]:
    """Views of the active ranks in rank order; a rank without a snapshot yet looks empty."""
    by_rank = {int(l.dp_rank): l for l in loads}
    views = []
    for rank in sorted(active):
        load = by_rank.get(rank)
        if load is None:
            summary = plans.get(rank) or ReplicaSummary(replica_id=rank, time_s=now_s)
        else:
            summary = summary_from_load(load, plans.get(rank), now_s)
        views.append(SnapshotReplicaView(rank, summary))
    return views


class SloDataParallelController(dpc.DataParallelController):
    """Drop-in replacement registered by the plugin for SGLang's DP controller."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slo_setup()

    def slo_setup(self, config=None) -> None:
        cfg = config or load_config()
        self._slo_router = create_router(cfg.router, dict(cfg.router_options), cfg.seed)
        self._slo_perf = get_model(cfg.perf_model)
        self._slo_defaults = SloDefaults(ttft_slowdown=cfg.default_ttft_slowdown, tpot_ms=cfg.default_tpot_ms)
        self._slo_summary_dir = os.environ.get(ENV_SUMMARY_DIR)
        self.dispatching = self.slo_dispatch
        log.info("sloserve router %s dispatches across %d DP ranks", cfg.router, len(self.workers))

    def event_loop(self) -> None:
        """SGLang's loop (drain the socket, dispatch each request), blocking while it is empty."""
        poller = zmq.Poller()
        poller.register(self.recv_from_tokenizer, zmq.POLLIN)
        while True:
            self.soft_watchdog.feed()
            if not poller.poll(IDLE_WAIT_MS):
                continue
            while True:
                self.soft_watchdog.feed()
                try:
                    recv_req = dpc.sock_recv(self.recv_from_tokenizer, flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    break
                self._request_dispatcher(recv_req)

    def slo_views(self, now_s: float) -> list[SnapshotReplicaView]:
        loads = self.load_snapshot_reader.read_all()
        return build_views(loads, read_summaries(self._slo_summary_dir), self._active_workers, now_s)

    def slo_dispatch(self, req) -> None:
        if self.maybe_external_dp_rank_routing(req):
            return
        now = time.time()
        sp = req.sampling_params
        prompt = len(req.input_ids) if req.input_ids is not None else 1
        try:
            core = build_request(
                req.rid,
                prompt,
                sp.max_new_tokens or 1,
                sp.custom_params,
                now,
                self._slo_perf.zero_load_prefill_s,
                self._slo_defaults,
            )
        except SloParamError:
            core = build_request(
                req.rid,
                prompt,
                sp.max_new_tokens or 1,
                None,
                now,
                self._slo_perf.zero_load_prefill_s,
                self._slo_defaults,
            )  # the scheduler rejects it
        decision = self._slo_router.route(core, self.slo_views(now), now)
        if decision.best_effort:
            custom = dict(sp.custom_params or {})
            custom["slo_routed_best_effort"] = True
            sp.custom_params = custom
        dpc.sock_send(self.workers[decision.replica_id], req)
