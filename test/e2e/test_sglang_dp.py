"""Two data-parallel ranks: each plans and publishes as its own replica; the SLO router spreads."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_helpers import generate, read_summaries

pytestmark = pytest.mark.slow


def test_two_ranks_publish_two_distinct_replica_summaries(dp2):
    def one(i: int):
        return generate(dp2, text=f"question {i} " * 20, max_new_tokens=40, custom={"slo_tpot_ms": 1000.0}, timeout=180)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(12)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    replicas = {r.json()["meta_info"]["replica"] for r in results}
    assert replicas == {0, 1}  # the router used both ranks, and each reports its own id
    deadline = time.monotonic() + 30
    while set(read_summaries(dp2)) != {0, 1} and time.monotonic() < deadline:
        time.sleep(0.2)
    summaries = read_summaries(dp2)
    assert set(summaries) == {0, 1}
    assert all(s.replica_id == rid and s.kv_capacity_tokens > 0 for rid, s in summaries.items())


def test_the_dp_controller_waits_instead_of_spinning(dp2):
    # SGLang's own controller polls its socket in a loop that never sleeps (a core, while idle);
    # the plugin's waits on it. CPU seconds over an idle stretch, against a loop that spins: a
    # spinning process gets most of a core even on a busy 2-core machine
    psutil = pytest.importorskip("psutil")
    root = psutil.Process(dp2.handle.proc.pid)
    (ctrl,) = [
        p for p in root.children(recursive=True) if "data_parallel_controller" in " ".join(p.cmdline() + [p.name()])
    ]
    assert generate(dp2, max_new_tokens=4, custom={"slo_tpot_ms": 1000.0}).status_code == 200  # it dispatches
    before = sum(ctrl.cpu_times()[:2])
    time.sleep(2.0)
    assert sum(ctrl.cpu_times()[:2]) - before < 0.3
