"""Stage SLOs for SGLang frontend programs (``@sgl.function`` / ``sgl.gen``).

``sgl.gen`` takes no SLO arguments, so tags travel beside it::

    from sloserve.frontend import SloRuntimeEndpoint, slo_stage  # first: stubs triton on a CPU machine
    import sglang as sgl

    @sgl.function
    def reason(s, question):
        s += question
        with slo_stage(s, "thinking", tpot_ms=50):
            s += sgl.gen("thought", max_tokens=256, stop="</think>")
        with slo_stage(s, "answer", tpot_ms=150):
            s += sgl.gen("answer", max_tokens=64)

    sgl.set_default_backend(SloRuntimeEndpoint("http://127.0.0.1:30000", slo_class="reasoning"))

Every generation call then carries ``custom_params`` (slo_stage, slo_tpot_ms, ..., and a
per-run ``slo_program_id`` with an increasing ``slo_stage_index``), and its meta_info
(``state.get_meta_info("answer")``) reports the tier served and whether the SLO was met.
``SloRuntimeEndpoint`` needs the ``sglang`` package; ``slo_stage`` imports it on first use.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["SloRuntimeEndpoint", "slo_stage", "slo_tags"]


def _stub_gpu_imports() -> None:
    """``import sglang`` needs triton (and torchvision), GPU-only packages a client machine may
    lack although frontend programs never use them: where they are not really installed, stand-ins
    are registered (sloserve.sglang.gpu_stubs; a real install is never shadowed). Import
    ``sloserve.frontend`` before ``sglang`` for this to apply."""
    if importlib.util.find_spec("sglang") is not None:
        from sloserve.sglang import gpu_stubs  # noqa: PLC0415

        gpu_stubs.install()


_stub_gpu_imports()


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sloserve.frontend import endpoint

        return getattr(endpoint, name)
    raise AttributeError(name)
