"""The launcher: argument split, validation, and the config reaching spawned processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sloserve.sglang.config import ENV_CONFIG, ENV_ENABLE
from sloserve.sglang.launch import build_command, main, sglang_backend_available, split_args


def test_sloserve_arguments_are_split_from_sglangs():
    cfg, rest, _ = split_args(["--backend", "sglang", "--model-path", "m", "--policy", "fcfs", "--policy-opt",
                               "token_budget=512", "--router", "total-tokens", "--dp-size", "2", "--port", "30001",
                               "--perf-model", "llama-3-8b-h100", "--no-slo-spec"])
    assert cfg.policy == "fcfs" and dict(cfg.policy_options) == {"token_budget": 512}
    assert cfg.router == "total-tokens" and not cfg.spec_slo_aware
    assert rest == ["--model-path", "m", "--dp-size", "2", "--port", "30001", "--enable-mixed-chunk"]
    _, rest2, _ = split_args(["--model-path", "m", "--no-mixed-chunk"])
    assert "--enable-mixed-chunk" not in rest2


def test_build_command_enables_the_plugin_and_keeps_whitelists():
    cmd, env = build_command(["--model-path", "m", "--policy", "fcfs"], {"SGLANG_PLUGINS": "other"})
    assert cmd[1:4] == ["-m", "sglang.launch_server", "--model-path"]
    assert env[ENV_ENABLE] == "1" and json.loads(env[ENV_CONFIG])["policy"] == "fcfs"
    assert env["SGLANG_PLUGINS"] == "other,sloserve"


def test_bad_names_fail_before_sglang_starts(capsys):
    with pytest.raises(KeyError, match="unknown policy"):
        build_command(["--policy", "nope"], {})
    with pytest.raises(ValueError, match="unknown option"):
        build_command(["--policy", "fcfs", "--policy-opt", "bogus=1"], {})
    with pytest.raises(ValueError, match="key=value"):
        split_args(["--router-opt", "novalue"])
    assert main(["--router", "nope", "--model-path", "m"]) == 2
    assert "unknown router" in capsys.readouterr().err


def test_config_reaches_a_spawned_process():
    _, env = build_command(["--policy", "fcfs", "--policy-opt", "token_budget=77"], {"PATH": "/usr/bin:/bin"})
    code = ("from sloserve.sglang.config import load_config, plugin_enabled; "
            "c = load_config(); print(plugin_enabled(), c.policy, dict(c.policy_options)['token_budget'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "fcfs", "77"]


def test_backend_needs_cuda():
    try:
        import torch
    except ImportError:
        assert sglang_backend_available() is False
        return
    assert sglang_backend_available() == (torch.cuda.is_available() and _has_sglang())


def _has_sglang() -> bool:
    import importlib.util

    return importlib.util.find_spec("sglang") is not None
