"""SloDataParallelController dispatch on fabricated SGLang load snapshots and real ZMQ sockets."""

from __future__ import annotations

import pytest

pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
pytestmark = pytest.mark.sglang

import zmq  # noqa: E402
from sglang.srt.managers.load_snapshot import LoadSnapshot  # noqa: E402
from test_ipc import tokenized  # noqa: E402

from sloserve.core.plan import ReplicaSummary  # noqa: E402
from sloserve.sglang.config import SglangAdapterConfig  # noqa: E402
from sloserve.sglang.dp_controller import SloDataParallelController, build_views, summary_from_load  # noqa: E402
from sloserve.sglang.summaries import ENV_SUMMARY_DIR, write_summary  # noqa: E402


class SnapshotSource:
    """Stands where SGLang's shared-memory snapshot reader stands: returns fixed snapshots."""

    def __init__(self, loads):
        self.loads = loads

    def read_all(self):
        return list(self.loads)


@pytest.fixture
def controller(monkeypatch, tmp_path):
    """A controller over 3 DP ranks whose workers are real PUSH sockets (bypassing the
    process-launching __init__, which needs GPUs)."""
    monkeypatch.setenv(ENV_SUMMARY_DIR, str(tmp_path))
    ctx = zmq.Context()
    pulls, pushes = [], []
    for rank in range(3):
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind(f"inproc://dp-{rank}")
        push.connect(f"inproc://dp-{rank}")
        pulls.append(pull)
        pushes.append(push)
    ctl = SloDataParallelController.__new__(SloDataParallelController)
    ctl.workers = pushes
    ctl._active_workers = [0, 1, 2]
    ctl.load_snapshot_reader = SnapshotSource([])

    def received():
        from sglang.srt.managers.io_struct import sock_recv

        return {r: sock_recv(p) for r, p in enumerate(pulls) if p.poll(200)}

    yield ctl, received
    for s in pulls + pushes:
        s.close(0)
    ctx.term()


def load(rank, running, waiting, used, total=10000):
    return LoadSnapshot(
        timestamp=1.0,
        dp_rank=rank,
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        num_used_tokens=used,
        num_total_tokens=used,
        max_total_num_tokens=total,
        num_waiting_uncached_tokens=100 * waiting,
    )


def test_least_loaded_rank_gets_the_request(controller):
    ctl, received = controller
    ctl.slo_setup(SglangAdapterConfig(router="total-tokens"))
    assert ctl.dispatching == ctl.slo_dispatch
    ctl.load_snapshot_reader.loads = [load(0, 8, 4, 9000), load(1, 1, 0, 500), load(2, 5, 2, 6000)]
    ctl.dispatching(tokenized({"slo_tpot_ms": 50.0}))
    got = received()
    assert list(got) == [1] and got[1].rid == "req-1"


def test_pinned_rank_and_round_robin(controller):
    ctl, received = controller
    ctl.slo_setup(SglangAdapterConfig(router="round-robin"))
    pinned = tokenized(None)
    pinned.routed_dp_rank = 2
    ctl.dispatching(pinned)
    assert list(received()) == [2]
    ranks = []
    for _ in range(3):
        ctl.dispatching(tokenized(None))
        ranks += list(received())
    assert ranks == [0, 1, 2]


def test_views_merge_snapshots_with_fresh_plan_summaries(tmp_path):
    write_summary(
        tmp_path,
        ReplicaSummary(replica_id=1, time_s=99.5, admitted_by_tier={"slo": 3}, slack_s=0.2, outstanding_tokens=50),
    )
    write_summary(tmp_path, ReplicaSummary(replica_id=2, time_s=10.0, slack_s=5.0))  # stale
    from sloserve.sglang.summaries import read_summaries

    views = build_views(
        [load(0, 1, 1, 100), load(1, 2, 0, 200), load(2, 0, 0, 0)], read_summaries(tmp_path), [0, 1, 2], 100.0
    )
    assert [v.replica_id for v in views] == [0, 1, 2]
    assert views[1].summary().admitted_by_tier == {"slo": 3} and views[1].summary().slack_s == 0.2
    assert views[1].summary().free_kv_tokens == 9800 and views[1].summary().num_requests == 2
    assert views[2].summary().slack_s == 0.0  # the stale plan was ignored
    base = summary_from_load(load(0, 1, 1, 100), None, 100.0)
    assert (base.num_waiting, base.outstanding_tokens, base.kv_capacity_tokens) == (1, 100, 10000)


def test_view_admission_judges_kv_headroom():
    from sloserve.perf import get_model
    from sloserve.sglang.dp_controller import SnapshotReplicaView
    from sloserve.sglang.translate import build_request

    perf = get_model("llama-3-8b-h100")
    req = build_request("r", 3000, 1000, None, 0.0, perf.zero_load_prefill_s)
    full = SnapshotReplicaView(0, summary_from_load(load(0, 9, 0, 7000), None, 0.0))
    roomy = SnapshotReplicaView(1, summary_from_load(load(1, 1, 0, 1000), None, 0.0))
    assert full.can_admit(req, 0.0).reason.value == "no_kv"
    assert roomy.can_admit(req, 0.0).admitted


def test_slo_sequential_skips_full_ranks_and_marks_best_effort(controller):
    ctl, received = controller
    ctl.slo_setup(SglangAdapterConfig(router="slo-sequential"))
    ctl.load_snapshot_reader.loads = [load(0, 9, 0, 9990), load(1, 1, 0, 100), load(2, 9, 0, 9990)]
    req = tokenized({"slo_tpot_ms": 50.0})
    req.sampling_params.max_new_tokens = 500
    ctl.dispatching(req)  # first hop (rank 0) has no KV headroom: the next rank takes it
    got = received()
    assert list(got) == [1] and "slo_routed_best_effort" not in got[1].sampling_params.custom_params
    ctl.load_snapshot_reader.loads = [load(r, 9, 0, 9990) for r in range(3)]
    ctl.dispatching(tokenized({"slo_tpot_ms": 50.0}))  # nobody admits: best effort on the last hop
    got = received()
    assert len(got) == 1
    ((rank, sent),) = got.items()
    assert sent.sampling_params.custom_params == {"slo_tpot_ms": 50.0, "slo_routed_best_effort": True}
