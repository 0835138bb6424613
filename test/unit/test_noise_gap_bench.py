"""benchmark/noise_gap.py: the same seeds under every variant, each variant's engine and planner
options really applied, and clear usage errors."""

import json

import pytest

from load_script import load_script

noise_gap = load_script("benchmark/noise_gap.py")

ARGV = "--scenario summarizer --num-requests 40 --policy-opt planning_tolerance=0.05 --oracle-output-len".split()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap") / "gap.json"
    assert noise_gap.main(ARGV + ["--rate", "4", "--seeds", "2", "--seed", "3", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_variant_runs_the_same_seeds(table):
    assert table["seeds"] == [3, 4]
    assert set(table["variants"]) == set(noise_gap.VARIANTS)
    for name, runs in table["runs"].items():
        assert sorted(r["seed"] for r in runs) == [3, 4], name
        row = table["variants"][name]
        assert row["num_admitted"] == sum(r["num_admitted"] for r in runs) > 0
        assert row["num_admitted_slo_misses"] == sum(r["num_admitted_slo_misses"] for r in runs)


def test_the_variants_differ_as_their_engines_and_planners_do(table):
    v = table["variants"]
    # the exact engine is the planner's model: its plan holds for every admitted request
    assert v["exact"]["num_admitted_slo_misses"] == 0
    # the same noisy engine under three planners: the calibrated one keeps its margin, the
    # uncalibrated one admits as if the engine were exact and misses
    assert v["noise"]["num_admitted_slo_misses"] == 0
    assert v["no margin"]["num_admitted_slo_misses"] > 0
    assert v["noise"]["num_admitted"] < v["exact"]["num_admitted"]


@pytest.mark.parametrize("bad", [["--rate", "0"], ["--rate", "1", "--cv", "0"], ["--rate", "1", "--seeds", "0"]])
def test_bad_arguments_are_usage_errors(bad):
    with pytest.raises(SystemExit) as exc:
        noise_gap.main(bad)
    assert exc.value.code == 2
