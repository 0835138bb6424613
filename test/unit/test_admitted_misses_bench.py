"""benchmark/admitted_misses.py: one run per seed of the same options, totals that add up, and a
clear usage error for a rate that is not positive."""

import json

import pytest

from load_script import load_script

admitted_misses = load_script("benchmark/admitted_misses.py")


def test_one_run_per_seed_and_totals(tmp_path, capsys):
    out = tmp_path / "misses.json"
    argv = "--scenario coder --num-requests 30 --realistic --rate 4 --seeds 2 --seed 5 --json".split() + [str(out)]
    assert admitted_misses.main(argv) == 0
    got = json.loads(out.read_text())
    assert [r["seed"] for r in got["runs"]] == [5, 6]
    assert got["runs"][0] != got["runs"][1]  # the seeds are different workloads
    assert got["num_admitted"] == sum(r["num_admitted"] for r in got["runs"]) > 0
    assert got["num_admitted_slo_misses"] == sum(r["num_admitted_slo_misses"] for r in got["runs"])
    assert "total:" in capsys.readouterr().out


def test_a_rate_that_is_not_positive_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        admitted_misses.main(["--rate", "0"])
    assert exc.value.code == 2
