"""SGLang's output streamer, extended to report tier, deadlines and verdict in ``meta_info``."""

from __future__ import annotations

from typing import Callable

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

META_KEYS = ("slo_tier", "slo_class", "slo_ttft_deadline_s", "slo_next_deadline_s", "slo_verdict")


class SloOutputStreamer(SchedulerOutputStreamer):
    """Adds one value per emitted request for each of ``META_KEYS`` (SGLang's customized_info
    path, which the tokenizer manager copies into ``meta_info``)."""

    has_additional_customized_info = True
    meta_fn: Callable[[str], dict] | None = None

    @classmethod
    def bind(cls, meta_fn: Callable[[str], dict]) -> type["SloOutputStreamer"]:
        return type("BoundSloOutputStreamer", (cls,), {"meta_fn": staticmethod(meta_fn)})

    def build_additional_customized_info(self, reqs) -> dict[str, list]:
        if self.meta_fn is None:
            return {}
        metas = [self.meta_fn(r.rid) for r in reqs]
        return {key: [m.get(key) for m in metas] for key in META_KEYS}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key in META_KEYS or super().is_request_level_customized_info_key(key)
