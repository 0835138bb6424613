"""Routing policies' defining behaviour on fabricated replica views: load balancing with stale
summaries, sequential SLO routing's hops, errors on empty or unhealthy replica lists."""

from __future__ import annotations

from collections import Counter

import pytest
from test_routing_fakes import REFUSED, FakeView, admitted, make_request, summary

from sloserve.core.plan import AdmitDecision, AdmitReason
from sloserve.routing.base import ROUTERS, NoReplicaError, create_router

ALL = ["round-robin", "total-tokens", "total-requests", "power-of-two", "slo-sequential", "slo-proactive"]


def test_every_policy_is_registered():
    assert set(ALL) <= set(ROUTERS.names())


@pytest.mark.parametrize("name", ALL)
def test_empty_replica_list_is_a_clear_error(name):
    router = create_router(name)
    with pytest.raises(NoReplicaError, match="no replica|no healthy"):
        router.route(make_request(), [], 0.0)


@pytest.mark.parametrize("name", ALL)
def test_all_unhealthy_is_a_clear_error_and_unhealthy_are_skipped(name):
    router = create_router(name)
    sick = [FakeView(i, summary(i, healthy=False), admitted(1.0)) for i in range(3)]
    with pytest.raises(NoReplicaError, match="unhealthy"):
        router.route(make_request(), sick, 0.0)
    views = sick[:2] + [FakeView(2, summary(2), admitted(1.0))]
    chosen = {router.route(make_request(i), views, 0.0).replica_id for i in range(6)}
    assert chosen == {2}


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="unknown option"):
        create_router("total-tokens", {"bogus": 1})
    with pytest.raises(ValueError, match="max_hops"):
        create_router("slo-sequential", {"max_hops": -1})


def test_round_robin_rotates():
    router = create_router("round-robin")
    views = [FakeView(i) for i in range(3)]
    assert [router.route(make_request(i), views, 0.0).replica_id for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


# ---- load balancing ---------------------------------------------------------------------
def test_total_tokens_picks_least_outstanding_and_total_requests_fewest_requests():
    views = [
        FakeView(0, summary(0, outstanding=500, requests=1)),
        FakeView(1, summary(1, outstanding=100, requests=9)),
        FakeView(2, summary(2, outstanding=900, requests=2)),
    ]
    assert create_router("total-tokens").route(make_request(), views, 1.0).replica_id == 1
    assert create_router("total-requests").route(make_request(), views, 1.0).replica_id == 0


@pytest.mark.parametrize("name", ["total-tokens", "total-requests"])
def test_ties_rotate_instead_of_always_replica_zero(name):
    router = create_router(name)
    views = [FakeView(i, summary(i)) for i in range(4)]
    # Fresh summaries every time (time_s after each dispatch) that still show equal loads.
    picks = []
    for i in range(8):
        for v in views:
            v.publish(summary(v.replica_id, time_s=i + 0.5))
        picks.append(router.route(make_request(i), views, float(i)).replica_id)
    assert Counter(picks) == {0: 2, 1: 2, 2: 2, 3: 2}


@pytest.mark.parametrize("name", ["total-tokens", "total-requests", "power-of-two"])
def test_stale_summaries_do_not_pile_a_burst_onto_the_emptiest_replica(name):
    # Summaries from t=0; replica 2 looked empty then. 12 requests arrive at t=1 before any
    # replica publishes again: counting what was routed since spreads them.
    views = [FakeView(i, summary(i, outstanding=0 if i == 2 else 600, requests=0 if i == 2 else 4)) for i in range(4)]
    router = create_router(name, seed=3)
    picks = Counter(router.route(make_request(i, prompt=100, output=50), views, 1.0).replica_id for i in range(12))
    assert picks[2] < 12
    assert picks[2] <= 6 and len(picks) >= 3


def test_fresh_summary_retires_pending_and_equal_time_summary_keeps_it():
    router = create_router("total-tokens")
    views = [FakeView(0, summary(0)), FakeView(1, summary(1))]
    first = router.route(make_request(0, prompt=1000, output=0 + 1), views, 1.0).replica_id
    assert first == 0
    ledger = router.ledger
    assert ledger.pending(0).num_requests == 1
    # A summary stamped at the dispatch instant may predate it: keep counting it.
    views[0].publish(summary(0, time_s=1.0, outstanding=1001, requests=1))
    assert ledger.effective(views[0].summary(), 1.0).outstanding_tokens == 2002
    # A later summary has seen it: no double count.
    views[0].publish(summary(0, time_s=1.5, outstanding=1001, requests=1))
    assert ledger.effective(views[0].summary(), 1.6).outstanding_tokens == 1001
    assert ledger.pending(0).num_requests == 0


def test_pending_expires_after_ttl_when_a_replica_stops_publishing():
    router = create_router("total-tokens", {"pending_ttl_s": 5.0})
    views = [FakeView(0, summary(0)), FakeView(1, summary(1))]
    router.route(make_request(0, prompt=1000), views, 1.0)
    assert router.ledger.effective(views[0].summary(), 3.0).pending.num_requests == 1
    assert router.ledger.effective(views[0].summary(), 7.0).pending.num_requests == 0


def test_power_of_two_is_deterministic_by_seed_and_takes_the_lighter_sample():
    views = [FakeView(i, summary(i, outstanding=100 * i)) for i in range(8)]

    def run(seed):
        router = create_router("power-of-two", seed=seed)
        return [router.route(make_request(i), views, float(i)).replica_id for i in range(40)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    # With two replicas both are always sampled: the lighter one always wins.
    two = [FakeView(0, summary(0, outstanding=900)), FakeView(1, summary(1, outstanding=10))]
    router = create_router("power-of-two", seed=1)
    for i in range(10):
        for v in two:  # fresh summaries, so pending does not accumulate
            v.publish(summary(v.replica_id, time_s=i + 0.5, outstanding=900 if v.replica_id == 0 else 10))
        assert router.route(make_request(i), two, float(i)).replica_id == 1
    one = [FakeView(5, summary(5))]
    assert create_router("power-of-two").route(make_request(), one, 0.0).replica_id == 5


# ---- sequential SLO routing (the paper) -----------------------------------------------------
def test_sequential_first_hop_is_round_robin_when_everyone_admits():
    router = create_router("slo-sequential")
    views = [FakeView(i, decide=admitted(0.5)) for i in range(3)]
    decisions = [router.route(make_request(i), views, 0.0) for i in range(6)]
    assert [d.replica_id for d in decisions] == [0, 1, 2, 0, 1, 2]
    assert all(d.hops == 1 and not d.best_effort for d in decisions)
    assert [len(v.asked) for v in views] == [2, 2, 2]


def test_sequential_moves_on_after_a_refusal():
    router = create_router("slo-sequential", {"max_hops": 3})
    views = [FakeView(0, decide=REFUSED), FakeView(1, decide=admitted(0.1)), FakeView(2, decide=admitted(0.1))]
    d = router.route(make_request(0), views, 0.0)
    assert (d.replica_id, d.hops, d.best_effort) == (1, 2, False)
    assert views[0].asked == ["r0"] and views[1].asked == ["r0"] and views[2].asked == []


def test_sequential_hop_limit_and_best_effort_only_on_the_last_hop():
    router = create_router("slo-sequential", {"max_hops": 3})
    views = [FakeView(i, decide=REFUSED) for i in range(5)]
    router.route(make_request(0), views, 0.0)  # first hop at replica 0
    d = router.route(make_request(1), views, 0.0)  # first hop at replica 1: asks 1, 2, 3
    assert (d.replica_id, d.hops, d.best_effort) == (3, 3, True)
    assert [len(v.asked) for v in views] == [1, 2, 2, 1, 0]  # asked 0,1,2 then 1,2,3
    # A best-effort answer from the replica is a refusal of the SLO tier, not acceptance.
    be = [FakeView(i, decide=AdmitDecision(AdmitReason.BEST_EFFORT)) for i in range(2)]
    d = create_router("slo-sequential", {"max_hops": 0}).route(make_request(), be, 0.0)
    assert (d.replica_id, d.hops, d.best_effort) == (1, 2, True)


def test_sequential_treats_queued_as_acceptance_and_limits_hops_to_replicas():
    router = create_router("slo-sequential", {"max_hops": 10})
    views = [FakeView(0, decide=REFUSED), FakeView(1, decide=AdmitDecision(AdmitReason.QUEUED))]
    d = router.route(make_request(), views, 0.0)
    assert (d.replica_id, d.hops, d.best_effort) == (1, 2, False)
    views[1].decide = REFUSED
    d = router.route(make_request(1), views, 0.0)  # starts at replica 1, then 0: only 2 hops
    assert (d.replica_id, d.hops, d.best_effort) == (0, 2, True)
    assert router.stats()["best_effort_last_hop"] == 1
