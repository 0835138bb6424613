"""The SLO-tagging endpoint and the ``slo_stage`` context manager (imports sglang)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import uuid
from typing import Any, Iterator

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.ir import SglConstantText, SglSamplingParams

from sloserve.runtime.slo_params import validate

_TAGS = "_sloserve_tags"  # on a StreamExecutor: tags in force for its next generation (worker side)
_SUBMIT_TAGS = "_sloserve_submit_tags"  # the same, as seen while the program body submits
_PROGRAM = "_sloserve_program"  # (program id, stage counter) of one program run


def slo_tags(stage: str | None = None, **slo: Any) -> dict[str, Any]:
    """``custom_params`` entries from friendly names: ``tpot_ms=50`` -> ``slo_tpot_ms``.

    ``class_`` (or ``slo_class``) names a preset. Values are validated now, so a typo fails in
    the program rather than as an HTTP 400 later.
    """
    tags = {}
    for key, value in slo.items():
        key = key.rstrip("_")
        tags[key if key.startswith("slo_") else f"slo_{key}"] = value
    if stage is not None:
        tags["slo_stage"] = stage
    validate(tags)
    return tags


class _SloMark(SglConstantText):
    """An empty text fill that, when the executor's worker reaches it, switches the tags.

    Going through the executor's own queue keeps the switch in program order: the worker
    thread runs expressions after the body has moved on, so a thread-local or context variable
    set by the body would be wrong by the time the request is sent.
    """

    def __init__(self, executor: Any, tags: dict[str, Any]) -> None:
        self._executor = executor
        self._tags = tags
        super().__init__("")

    @property
    def value(self) -> str:
        setattr(self._executor, _TAGS, self._tags)  # runs in the worker, in order
        return ""

    @value.setter
    def value(self, _text: str) -> None:
        pass


@contextlib.contextmanager
def slo_stage(s: Any, stage: str | None = None, **slo: Any) -> Iterator[dict[str, Any]]:
    """Tag the generation calls made inside the block (nested blocks add to outer tags)."""
    executor = s.stream_executor
    outer = dict(getattr(executor, _SUBMIT_TAGS, {}))
    inner = {**outer, **slo_tags(stage, **slo)}
    setattr(executor, _SUBMIT_TAGS, inner)
    s += _SloMark(executor, inner)
    try:
        yield inner
    finally:
        setattr(executor, _SUBMIT_TAGS, outer)
        s += _SloMark(executor, outer)


@dataclasses.dataclass
class _TaggedParams(SglSamplingParams):
    custom_params: dict | None = None

    def to_srt_kwargs(self) -> dict:
        kwargs = super().to_srt_kwargs()
        if self.custom_params:
            kwargs["custom_params"] = dict(self.custom_params)
        return kwargs


class SloRuntimeEndpoint(RuntimeEndpoint):
    """SGLang's RuntimeEndpoint that sends each call's stage SLO in ``custom_params``.

    ``default_slo`` (friendly names, as in ``slo_tags``) applies to every call; ``slo_stage``
    blocks add to it. Each program run gets its own ``slo_program_id`` and calls are numbered
    by ``slo_stage_index``, so the server can link the stages of one multi-stage request.
    """

    def __init__(
        self,
        base_url: str,
        *args: Any,
        slo_class: str | None = None,
        default_slo: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, *args, **kwargs)
        extra = {"class_": slo_class} if slo_class else {}
        self.default_tags = slo_tags(**{**(default_slo or {}), **extra})
        self._lock = threading.Lock()

    def call_tags(self, s: Any) -> dict[str, Any]:
        """The custom_params of the generation ``s`` (a StreamExecutor) is about to send."""
        with self._lock:
            program = getattr(s, _PROGRAM, None)
            if program is None:
                program = (uuid.uuid4().hex, itertools.count())
                setattr(s, _PROGRAM, program)
        tags = {"slo_program_id": program[0], **self.default_tags, **getattr(s, _TAGS, {})}
        tags.setdefault("slo_stage_index", next(program[1]))
        return tags

    def _tagged(self, s: Any, params: SglSamplingParams) -> _TaggedParams:
        values = {f.name: getattr(params, f.name) for f in dataclasses.fields(SglSamplingParams)}
        return _TaggedParams(**values, custom_params=self.call_tags(s))

    def generate(self, s: Any, sampling_params: SglSamplingParams, *args: Any, **kwargs: Any):
        return super().generate(s, self._tagged(s, sampling_params), *args, **kwargs)

    def generate_stream(self, s: Any, sampling_params: SglSamplingParams, *args: Any, **kwargs: Any):
        return super().generate_stream(s, self._tagged(s, sampling_params), *args, **kwargs)
