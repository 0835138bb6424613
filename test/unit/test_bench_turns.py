"""TakeTurns / run_interleaved: jobs alternate step by step, a finished job leaves the rotation,
an error in one job neither blocks the other nor goes unreported."""

import pytest

from sloserve.bench.turns import TakeTurns, run_interleaved


def job(name: str, steps: int, log: list, fail_at: int | None = None):
    def fn(turn):
        for i in range(steps):
            with turn():
                log.append((name, i))
                if i == fail_at:
                    raise RuntimeError(f"{name} failed")
        return steps

    return fn


def test_jobs_alternate_step_by_step_and_the_longer_one_finishes_alone():
    log: list = []
    out = run_interleaved({"host": job("host", 3, log), "ray": job("ray", 5, log)})
    assert out == {"host": 3, "ray": 5}
    assert log == [("host", 0), ("ray", 0), ("host", 1), ("ray", 1), ("host", 2), ("ray", 2), ("ray", 3), ("ray", 4)]


def test_three_jobs_keep_their_order():
    log: list = []
    run_interleaved({n: job(n, 2, log) for n in ("a", "b", "c")})
    assert [n for n, _ in log] == ["a", "b", "c", "a", "b", "c"]


def test_an_error_in_one_job_lets_the_other_finish_and_is_raised():
    log: list = []
    with pytest.raises(RuntimeError, match="host failed"):
        run_interleaved({"host": job("host", 4, log, fail_at=1), "ray": job("ray", 3, log)})
    assert [e for e in log if e[0] == "ray"] == [("ray", 0), ("ray", 1), ("ray", 2)]


def test_names_must_be_distinct_and_a_done_job_gets_no_turn():
    with pytest.raises(ValueError):
        TakeTurns(["a", "a"])
    t = TakeTurns(["a", "b"])
    t.done("a")
    assert t.current == "b"
    with pytest.raises(ValueError):
        with t.turn("a"):
            pass
