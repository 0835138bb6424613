"""The Ray replica's server command reaches SGLang's own argument parser intact."""

from __future__ import annotations

import argparse

import pytest

from sloserve.sglang.launch import build_command

pytest.importorskip("ray", reason="Ray is optional: pip install -e .[ray]")
pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
from sglang.srt.server_args import ServerArgs  # noqa: E402

from sloserve.sglang.ray_replica import replica_command  # noqa: E402


def sglang_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    ServerArgs.add_cli_args(p)
    return p


def test_a_key_that_starts_with_a_dash_reaches_sglang():
    key = "-Xq3_tE9k2L"  # secrets.token_urlsafe starts with '-' one time in 64
    cmd = replica_command(["--model-path", "m", "--policy", "slos-serve"], "10.0.0.2", 31000, key)
    assert cmd[1:5] == ["-m", "sloserve.launch_server", "--backend", "sglang"]
    sglang_cmd, _ = build_command(cmd[5:], environ={})
    ns = sglang_parser().parse_args(sglang_cmd[3:])
    assert (ns.api_key, ns.host, ns.port, ns.model_path) == (key, "10.0.0.2", 31000, "m")
    # the control: as two words, SGLang's parser refuses it and the replica never starts
    with pytest.raises(argparse.ArgumentError, match="expected one argument"):
        sglang_parser().parse_args(["--model-path", "m", "--api-key", key])
