"""SGLang's output streamer, extended to report each request's SLO in ``meta_info``.

SGLang's ``customized_info`` path carries, per emitted request, a *list* that the tokenizer
manager accumulates across a request's outputs (0.5.23 extends a list with it; a scalar there
crashes the server, a string would be split into characters). So each value travels wrapped
in a one-element list, and ``plain_meta_info`` (an AROUND hook on the tokenizer manager,
registered by the plugin) reports the latest one as a plain value. Keys: ``SLO_REPORT_KEYS``.
"""

from __future__ import annotations

import time
from typing import Callable

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from sloserve.metrics.report import SLO_REPORT_KEYS

META_KEYS = SLO_REPORT_KEYS


class SloOutputStreamer(SchedulerOutputStreamer):
    """Adds one value per emitted request for each of ``META_KEYS``."""

    has_additional_customized_info = True
    meta_fn: Callable[[object, float], dict] | None = None  # (SGLang Req, Unix now) -> report

    @classmethod
    def bind(cls, meta_fn: Callable[[object, float], dict]) -> type["SloOutputStreamer"]:
        return type("BoundSloOutputStreamer", (cls,), {"meta_fn": staticmethod(meta_fn)})

    def build_additional_customized_info(self, reqs) -> dict[str, list]:
        if self.meta_fn is None:
            return {}
        now = time.time()  # when the tokens leave the scheduler: the report's token times
        metas = [self.meta_fn(r, now) for r in reqs]
        return {key: [[m.get(key)] for m in metas] for key in META_KEYS}


def plain_meta_info(original, manager, meta_info: dict, state, customized_info: dict, index: int, *args, **kwargs):
    """AROUND hook on ``TokenizerManager.update_request_meta_info``: sloserve's keys are
    reported as their latest plain value; every other key keeps SGLang's accumulation."""
    ours = {k: v for k, v in customized_info.items() if k in META_KEYS}
    if not ours:
        return original(manager, meta_info, state, customized_info, index, *args, **kwargs)
    rest = {k: v for k, v in customized_info.items() if k not in META_KEYS}
    result = original(manager, meta_info, state, rest, index, *args, **kwargs) if rest else None
    for key, values in ours.items():
        value = values[index]
        meta_info[key] = value[-1] if isinstance(value, list) and value else value
    return result
