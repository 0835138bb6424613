"""Stage SLOs for SGLang frontend programs (``@sgl.function`` / ``sgl.gen``).

``sgl.gen`` takes no SLO arguments, so tags travel beside it::

    import sglang as sgl
    from sloserve.frontend import SloRuntimeEndpoint, slo_stage

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

from typing import Any

__all__ = ["SloRuntimeEndpoint", "slo_stage", "slo_tags"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sloserve.frontend import endpoint

        return getattr(endpoint, name)
    raise AttributeError(name)
