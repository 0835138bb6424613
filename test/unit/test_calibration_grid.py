"""benchmark/calibration_grid.py: one capacity search and one run per (scenario, setting); a
setting's options win over the common --policy-opt; an unknown setting is a usage error."""

import json

import pytest

from load_script import load_script

calibration_grid = load_script("benchmark/calibration_grid.py")


def test_the_grid_runs_each_setting_with_its_own_options(tmp_path, capsys):
    out = tmp_path / "grid.json"
    argv = [
        *"--scenarios coder --settings q0.99,q0.9+tail0.999 --num-requests 30 --step-time-noise 0.1".split(),
        *"--policy-opt calibrate_quantile=0.5 --policy-opt planning_tolerance=0.05 --json".split(),
        str(out),
    ]
    assert calibration_grid.main(argv) == 0
    cells = json.loads(out.read_text())["cells"]
    assert set(cells) == {"coder/q0.99", "coder/q0.9+tail0.999"}
    assert cells["coder/q0.99"]["options"]["calibrate_quantile"] == 0.99  # the setting's, not the common one
    assert cells["coder/q0.9+tail0.999"]["options"]["planning_tolerance"] == 0.05
    assert all(c["capacity_rps_per_gpu"] > 0 and c["num_admitted"] > 0 for c in cells.values())
    assert "| coder |" in capsys.readouterr().out


def test_an_unknown_setting_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        calibration_grid.main(["--settings", "q0.42"])
    assert exc.value.code == 2
