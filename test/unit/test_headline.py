"""benchmark/headline.py: cells are cached as they finish and a rerun resumes from them."""

from __future__ import annotations

import json

import pytest

from load_script import load_script


def load():
    return load_script("benchmark/headline.py")


def test_headline_writes_cells_and_the_table_then_resumes(tmp_path, capsys):
    hl = load()
    argv = [
        "--out",
        str(tmp_path),
        "--scenarios",
        "coder",
        "--replicas-list",
        "1",
        "--num-requests-per-replica",
        "20",
        "--policies",
        "full,vllm",
        "--max-seq-len",
        "2038",
        "--resolution",
        "0.2",
    ]
    assert hl.main(argv) == 0
    cells = sorted(p.name for p in tmp_path.glob("*_coder_r1_*.json"))
    assert cells == [
        "paper_coder_r1_full.json",
        "paper_coder_r1_vllm.json",
        "realistic_coder_r1_full.json",
        "realistic_coder_r1_vllm.json",
    ]
    real = json.loads((tmp_path / "realistic_coder_r1_full.json").read_text())
    assert real["capacity_rps_per_gpu"] > 0 and real["num_admitted_slo_misses"] is not None
    assert real["num_requests"] == 20  # 20 per replica, one replica
    for name in cells:
        cell = json.loads((tmp_path / name).read_text())
        assert cell["smooth_goodput_rps"] >= cell["goodput_rps"] > 0  # same run, at the capacity rate
    table = (tmp_path / "table.md").read_text()
    assert "### paper mode" in table and "### realistic mode" in table and "full / best baseline" in table
    assert table.count("Goodput / smooth goodput") == 2 and "(vllm) |" in table
    png = (tmp_path / "headline.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000  # a figure of the ratios, both modes
    assert hl.plot({}, ["paper"], ["coder"], [1], ["full", "vllm"], tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()  # no cell, no empty figure

    def boom(job):
        raise AssertionError("a cached cell was recomputed")

    hl.run_cell = boom  # a rerun must not compute anything
    assert hl.main(argv) == 0
    assert (tmp_path / "table.md").read_text() == table


def test_cell_arguments_per_mode_and_policy():
    hl = load()
    import argparse  # noqa: PLC0415

    from sloserve.sim.options import add_sim_arguments  # noqa: PLC0415

    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    args = p.parse_args([])
    args.full_alpha = 0.7
    a, opts = hl.cell_args(args, "realistic", "chatbot", 4, "full")
    assert (a.policy, a.spec, a.router, a.realistic) == ("slos-serve", "adaptive", "slo-proactive", True)
    assert opts == {"planning_tolerance": 0.05, "output_length": "learn"}
    a, opts = hl.cell_args(args, "paper", "chatbot", 4, "distserve")
    assert a.replicas == 1 and opts == {"prefill_replicas": 4, "decode_replicas": 4} and a.oracle_output_len
    a, opts = hl.cell_args(args, "paper", "chatbot", 1, "vllm")
    assert (a.policy, a.spec, a.router, opts) == ("vllm", "off", "round-robin", {})
    assert a.num_requests is None  # --num-requests as given
    args.num_requests_per_replica = 50  # N x the cell's replicas, distserve's included
    assert hl.cell_args(args, "paper", "chatbot", 1, "vllm")[0].num_requests == 50
    assert hl.cell_args(args, "paper", "chatbot", 4, "full")[0].num_requests == 200
    a, _ = hl.cell_args(args, "paper", "chatbot", 4, "distserve")
    assert (a.replicas, a.num_requests) == (1, 200)
    with pytest.raises(SystemExit):
        hl.main([])  # --out is required
