"""benchmark/ttft_horizon.py: TTFT horizons in steps, the margin a miss budget asks there, the
workload options applied, and clear usage errors."""

import json
import math
from statistics import NormalDist

import pytest

from load_script import load_script

ttft_horizon = load_script("benchmark/ttft_horizon.py")

ARGV = "--scenarios summarizer,coder --num-requests 20 --max-seq-len 2038".split()


def table(tmp_path, extra: list[str]) -> dict:
    out = tmp_path / "h.json"
    assert ttft_horizon.main(ARGV + extra + ["--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_horizons_follow_the_ttft_slo_and_the_margin_the_noise(tmp_path):
    base = table(tmp_path, [])
    half = table(tmp_path, ["--ttft-scale", "0.5"])
    for name in ("summarizer", "coder"):
        row = base["scenarios"][name]
        assert row["stages"] == 20 and 0 < row["p10"] <= row["median"] <= row["p90"]
        # the same stages with every TTFT halved: every horizon halves, the TPOTs kept
        assert half["scenarios"][name]["median"] == pytest.approx(row["median"] / 2)
        z = NormalDist().inv_cdf(0.999)
        assert row["margin"] == pytest.approx(z * 0.1 / math.sqrt(row["median"]))
    # coder's 5x slowdown and 50 ms TPOT put its first tokens further away than summarizer's 3x
    assert base["scenarios"]["coder"]["median"] > base["scenarios"]["summarizer"]["median"]


@pytest.mark.parametrize("bad", [["--scenarios", "chat"], ["--cv", "0"], ["--miss", "1"]])
def test_bad_arguments_are_usage_errors(bad):
    with pytest.raises(SystemExit) as exc:
        ttft_horizon.main(bad)
    assert exc.value.code == 2
