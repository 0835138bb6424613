"""bench_serving comparisons: several launched policies of the embedded runtime, failed launches."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from sloserve.bench.cli import main


def test_two_policies_table_plots_and_output(tmp_path, capsys, monkeypatch):
    out, plots = tmp_path / "runs.jsonl", tmp_path / "plots"
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))  # where the servers' logs go
    rc = main(
        [
            "--policy",
            "fcfs",
            "--policy",
            "slos-serve",
            "--server-args",
            "--time-scale 0.05",
            "--scenario",
            "coder",
            "--seed",
            "2",
            "--num-prompts",
            "4",
            "--request-rate",
            "10",
            "--disable-tqdm",
            "--output-file",
            str(out),
            "--plot-dir",
            str(plots),
            "--warmup-requests",
            "0",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    table = text[text.index("target ") :]
    assert table.count("\nfcfs ") == 1 and table.count("\nslos-serve ") == 1
    runs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["label"], r["request_rate"], r["server_policy"]) for r in runs] == [
        ("fcfs", 10.0, "fcfs"),
        ("slos-serve", 10.0, "slos-serve"),
    ]
    for name in ("attainment_vs_rate.png", "tier_bars.png"):
        assert (plots / name).stat().st_size > 5000
    assert list(logs.iterdir()) == []  # each server's log went with it (they piled up in /tmp)


def test_failed_server_start_is_one_clear_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["--policy", "no-such-policy", "--num-prompts", "2", "--disable-tqdm"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server exited" in err[0]
    log = Path(re.search(r"\(log (\S+)\)", err[0]).group(1))
    assert log.parent == tmp_path and "no-such-policy" in log.read_text()  # kept: the error names it
