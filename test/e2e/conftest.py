"""The real SGLang 0.5.23 server, with and without the sloserve plugin, end to end.

On a machine without CUDA the servers run SGLang's CPU engine (``--device cpu``: the project's
CPU mode) on a tiny random Llama built here in a temp dir; with CUDA they run on the GPU. Every
configuration (``e2e_helpers.CONFIGS``) is started once per session, all of them on first use
so their cold starts overlap, and stopped (whole process group) at the end. Requests carry
timeouts, so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from e2e_helpers import ServerSet, SglangServer, missing_packages  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    reason = missing_packages()
    if reason:
        pytest.skip(reason)
    from sloserve.sglang.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def servers(model_dir, tmp_path_factory):
    pool = ServerSet(model_dir, tmp_path_factory.mktemp("sglang-logs"))
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def plain(servers) -> SglangServer:
    return servers.get("plain")


@pytest.fixture(scope="session")
def plugin(servers) -> SglangServer:
    return servers.get("plugin")


@pytest.fixture(scope="session")
def small_kv(servers) -> SglangServer:
    return servers.get("small_kv")


@pytest.fixture(scope="session")
def dp2(servers) -> SglangServer:
    return servers.get("dp2")
