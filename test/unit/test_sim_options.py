"""`python -m sloserve.sim` flags are generated from SimOptions/SpecOptions/RunOptions and keep
their names, defaults, types and choices (the hand-written parser's, pinned here)."""

from __future__ import annotations

import argparse

from sloserve.sim.cli import _build_parser
from sloserve.sim.options import SimOptions, add_sim_arguments, build_sim_config, sim_config, workload_config
from sloserve.spec.config import SpecOptions

# flag -> (default, type, choices); None type: a flag without a value
SHARED = {
    "--scenario": ("chatbot", str, None),
    "--policy": ("slos-serve", str, None),
    "--policy-opt": ([], None, None),
    "--model": ("opt-13b-tp2-a100", str, None),
    "--kv-tokens": (97648, int, None),
    "--max-seq-len": (None, int, None),
    "--trace": (None, str, None),
    "--trace-window": (None, str, None),
    "--lengths": (None, str, None),
    "--arrival": ("poisson", str, ["poisson", "gamma"]),
    "--burstiness": (1.0, float, None),
    "--replicas": (1, int, None),
    "--router": ("round-robin", str, None),
    "--router-opt": ([], None, None),
    "--seed": (0, int, None),
    "--num-requests": (None, int, None),
    "--slo-scale": (1.0, float, None),
    "--ttft-scale": (1.0, float, None),
    "--unknown-output-len": (False, None, None),
    "--oracle-output-len": (False, None, None),
    "--step-time-noise": (None, float, None),
    "--step-time-bias": (None, float, None),
    "--step-time-bias-known": (False, None, None),
    "--step-time-trace": ("", str, None),
    "--engine-model": ("", str, None),
    "--client-timeout": (False, None, None),
    "--best-effort-expiry": (False, None, None),
    "--charge-scheduler-time": (False, None, None),
    "--no-warmup": (False, None, None),
    "--realistic": (False, None, None),
    "--tolerance": (0.05, float, None),
    "--json": (None, str, None),
    "--plot": (None, str, None),
    "--spec": ("off", str, ["off", "fixed", "adaptive", "goodput"]),
    "--alpha": (0.0, float, None),
    "--max-spec-len": (4, int, None),
    "--spec-fixed-len": (None, int, None),
    "--spec-online": (True, None, None),
    "--no-spec-online": (True, None, None),
    "--spec-prior": (None, float, None),
    "--spec-margin": (0.15, float, None),
    "--spec-uniform": (False, None, None),
}
RUN = {"--rate": (1.0, float, None), "--chrome-trace": (None, str, None)}
CAPACITY = {
    "--attainment": (0.9, float, None),
    "--start-rate": (1.0, float, None),
    "--resolution": (0.025, float, None),
}


def _flags(parser: argparse.ArgumentParser) -> dict:
    out = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                out[flag] = (action.default, action.type, list(action.choices) if action.choices else None)
    return out


def test_every_flag_keeps_its_name_default_type_and_choices():
    sub = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert _flags(sub.choices["run"]) == {**SHARED, **RUN}
    assert _flags(sub.choices["capacity"]) == {**SHARED, **CAPACITY}


def test_namespace_and_dataclass_paths_build_the_same_config():
    """Benchmarks pass an (edited) namespace; the CLI passes the dataclasses."""
    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    argv = ["--policy", "sarathi", "--spec", "fixed", "--alpha", "0.6", "--policy-opt", "chunk=256", "--realistic"]
    args = p.parse_args(argv)
    typed = sim_config(
        SimOptions(policy="sarathi", policy_opt=("chunk=256",), realistic=True), SpecOptions("fixed", 0.6)
    )
    assert build_sim_config(args) == typed
    assert typed.policy == "sarathi+spec" and typed.spec.fixed_len == 4 and typed.step_time_noise == 0.1
    assert args.policy == "sarathi"  # building a config no longer edits the namespace
    args.policy_opt = None  # as a benchmark may leave it
    assert build_sim_config(args).policy_options == {}


def test_workload_config_from_options():
    opts = SimOptions(scenario="coder", num_requests=None, lengths="x.csv", unknown_output_len=True)
    wl = workload_config(opts, 2.0)
    assert (wl.scenario, wl.rate_rps, wl.num_requests, wl.output_len_known) == ("coder", 2.0, 1000, False)
    assert str(wl.lengths_path).endswith("x.csv") and wl.trace_path is None
    assert SimOptions(realistic=True, oracle_output_len=True).output_len_known
