"""benchmark/capacity_table.py's markdown table: ratios to the best baseline and their geo-mean."""

from load_script import load_script

capacity_table = load_script("benchmark/capacity_table.py")


def test_ratio_to_the_best_baseline_and_geo_mean():
    caps = {
        ("a", "slos-serve"): 4.0,
        ("a", "vllm"): 2.0,
        ("a", "edf"): 1.0,
        ("b", "slos-serve"): 1.0,
        ("b", "vllm"): 2.0,
        ("b", "edf"): 0.5,
    }
    out = capacity_table.table(caps, ["a", "b"], ["slos-serve", "vllm", "edf"])
    assert "| a | 4 | 2 | 1 | 2.00x |" in out and "| b | 1 | 2 | 0.5 | 0.50x |" in out
    assert "**1.00x**" in out  # sqrt(2 * 0.5)


def test_without_baselines_the_ratio_is_not_applicable_instead_of_nan():
    out = capacity_table.table({("a", "slos-serve"): 4.0}, ["a"], ["slos-serve"])
    assert "| a | 4 | n/a |" in out and "nan" not in out and "Geo-mean" not in out
