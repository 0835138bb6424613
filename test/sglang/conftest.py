"""test/sglang: the SGLang adapter against SGLang's real classes, on CPU.

Only GPU-only imports (triton, torchvision) are stubbed, in this test process, before SGLang is
imported (``sloserve.sglang.gpu_stubs``, the same stubs the CPU server's processes use). Modules that need SGLang skip with a clear reason when it is not
installed: run ``scripts/install_sglang_cpu.sh`` (CPU torch + ``--no-deps`` SGLang). The
test_pure_* modules need neither and always run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from sloserve.sglang import gpu_stubs  # noqa: E402

SGLANG_MISSING = "sglang is not installed: run scripts/install_sglang_cpu.sh (CPU torch, --no-deps SGLang)"

if importlib.util.find_spec("sglang") is not None:
    gpu_stubs.install()


@pytest.fixture(scope="session")
def sglang_published():
    """Publish a CPU ServerArgs once, as SGLang's scheduler process does at start."""
    pytest.importorskip("sglang", reason=SGLANG_MISSING)
    logging.getLogger("sglang").setLevel(logging.WARNING)
    from sglang.srt import runtime_context
    from sglang.srt.server_args import ServerArgs

    args = ServerArgs(model_path="dummy", device="cpu", skip_server_warmup=True)
    runtime_context.publish(args, role="scheduler")
    # A single-rank scheduler: what SGLang's launcher stamps into each scheduler process.
    runtime_context.get_parallel().override_permanently(tp_rank=0, attn_tp_rank=0)
    return args
