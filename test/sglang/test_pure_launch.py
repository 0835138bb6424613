"""The launcher: argument split, validation, and the config reaching spawned processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sloserve.sglang.config import ENV_CONFIG, ENV_ENABLE
from sloserve.sglang.launch import build_command, main, sglang_backend_available, split_args


def test_sloserve_arguments_are_split_from_sglangs():
    cfg, rest, _ = split_args(
        [
            "--backend",
            "sglang",
            "--model-path",
            "m",
            "--policy",
            "fcfs",
            "--policy-opt",
            "token_budget=512",
            "--router",
            "total-tokens",
            "--dp-size",
            "2",
            "--port",
            "30001",
            "--perf-model",
            "llama-3-8b-h100",
            "--no-slo-spec",
        ]
    )
    assert cfg.policy == "fcfs" and dict(cfg.policy_options) == {"token_budget": 512}
    assert cfg.router == "total-tokens" and not cfg.spec_slo_aware
    assert rest == [
        "--model-path",
        "m",
        "--dp-size",
        "2",
        "--port",
        "30001",
        "--enable-mixed-chunk",
        "--enable-metrics",
    ]
    _, rest2, _ = split_args(["--model-path", "m", "--no-mixed-chunk", "--no-metrics"])
    assert "--enable-mixed-chunk" not in rest2 and "--enable-metrics" not in rest2
    _, rest3, _ = split_args(["--model-path", "m", "--enable-metrics"])
    assert rest3.count("--enable-metrics") == 1


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
    code = (
        "from sloserve.sglang.config import load_config, plugin_enabled; "
        "c = load_config(); print(plugin_enabled(), c.policy, dict(c.policy_options)['token_budget'])"
    )
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


def test_cpu_mode_is_activated_only_by_device_cpu():
    from sloserve.sglang import cpu_mode

    cmd, env = build_command(["--model-path", "m", "--device", "cpu", "--dp-size", "2"], {"PYTHONPATH": "/x"})
    assert env["SGLANG_USE_CPU_ENGINE"] == "1" and env["PYTHONPATH"].split(":") == [str(cpu_mode.SHIM_DIR), "/x"]
    assert "--sleep-on-idle" in cmd and cmd[cmd.index("--max-total-tokens") + 1] == "32768"
    assert env["SGLANG_CPU_OMP_THREADS_BIND"].count("|") == 1  # one core group per DP rank
    cmd, env = build_command(["--model-path", "m", "--device=cpu", "--max-total-tokens", "4096"], {})
    assert cmd.count("--max-total-tokens") == 1 and "4096" in cmd and "SGLANG_CPU_OMP_THREADS_BIND" not in env
    cmd, env = build_command(["--model-path", "m"], {"PYTHONPATH": "/x"})  # a GPU run: untouched
    assert "SGLANG_USE_CPU_ENGINE" not in env and env["PYTHONPATH"] == "/x" and "--sleep-on-idle" not in cmd


def test_thread_binding_splits_cores_between_ranks():
    from sloserve.sglang.cpu_mode import thread_binding

    assert thread_binding(2, [0, 1]) == "0|1"
    assert thread_binding(2, [0, 1, 2, 3]) == "0-1|2-3"
    assert thread_binding(3, [0, 1]) == "0|1|0"  # more ranks than cores: shared round-robin


def test_cpu_shim_placeholder_never_offers_amx_kernels():
    from sloserve.sglang.cpu_mode import SHIM_DIR

    code = (
        "import sgl_kernel as k; print(hasattr(k, 'convert_weight_packed'), len(k.PLACEHOLDER_NAMES)); "
        "k.verify_tree_greedy_cpu()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SHIM_DIR), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == ["False", "8"]
    assert "NotImplementedError" in out.stderr  # importable, but never silently runs


def test_help_works_without_a_gpu_or_triton():
    out = subprocess.run(
        [sys.executable, "-m", "sloserve.sglang.launch", "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--policy" in out.stdout and "--model-path" in out.stdout  # ours, then SGLang's


def test_launch_server_without_a_gpu_points_at_cpu_mode(capsys):
    from sloserve import launch_server

    if launch_server.cuda_available():
        pytest.skip("a GPU is present")
    assert launch_server.main(["--backend", "sglang", "--model-path", "m"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_stubs_in_this_process_do_not_hide_a_missing_triton():
    """test/sglang's conftest installs the stubs here; a child process still needs its own."""
    from sloserve.sglang import cpu_mode, gpu_stubs

    gpu_stubs.install()
    if gpu_stubs.really_installed("triton"):
        pytest.skip("a real triton is installed")
    assert cpu_mode.import_stubs_needed()
    assert str(cpu_mode.SHIM_DIR) in cpu_mode.help_environment({})["PYTHONPATH"]
