"""Turn a :class:`ProgramBatch` plus arrival times into ``ProgramSpec`` objects."""

from __future__ import annotations

import numpy as np

from sloserve.core.slo import ProgramSpec, StageSpec
from sloserve.workloads.scenarios import ProgramBatch, Scenario
from sloserve.workloads.slo_presets import SloPreset


def build_programs(
    scenario: Scenario,
    batch: ProgramBatch,
    arrival_s: np.ndarray,
    presets: list[SloPreset],
    output_known: bool,
    caps: tuple[int, int],
    max_seq_len: int | None,
) -> tuple[ProgramSpec, ...]:
    """Programs in arrival order with ids ``p000000``, ``p000001``, ... (``presets`` per class).

    ``caps`` = (final, intermediate) output bounds used as ``max_new_tokens`` when the output
    length is hidden; never below the true output, and within ``max_seq_len`` when given.
    """
    order = np.argsort(arrival_s, kind="stable")
    # Python ints/floats once, column-wise: per-element numpy scalar access is the slow part.
    cols = {name: getattr(batch, name)[order].tolist() for name in ("cls", "prompt", "output", "think", "rounds")}
    call_out, tool_out, delay = (getattr(batch, n)[order].tolist() for n in ("call_out", "tool_out", "delay_s"))
    arrivals = np.asarray(arrival_s, dtype=np.float64)[order].tolist()
    width = max(6, len(str(len(arrivals) - 1)))
    contexts = [
        _Context(
            p,
            (p.ttft(False), p.ttft(True)),
            (p.segments(final=False), p.segments(final=True)),
            output_known,
            caps,
            max_seq_len,
        )
        for p in presets
    ]
    meta = (("scenario", scenario.name),)
    out = []
    for i, arrival in enumerate(arrivals):
        c = cols["cls"][i]
        ctx = contexts[c]
        if scenario.kind == "tool-calling":
            stages = ctx.tool_chain(
                cols["prompt"][i], cols["output"][i], cols["rounds"][i], call_out[i], tool_out[i], delay[i]
            )
        else:
            stages = (ctx.stage(cols["prompt"][i], cols["output"][i], cols["think"][i]),)
        out.append(ProgramSpec(f"p{i:0{width}d}", arrival, presets[c].name, stages, metadata=meta))
    return tuple(out)


class _Context:
    """Per-program stage builder; SLO objects are shared across programs of a class."""

    __slots__ = ("preset", "ttfts", "segments", "known", "caps", "max_seq_len")

    def __init__(self, preset, ttfts, segments, known, caps, max_seq_len) -> None:
        self.preset = preset
        self.ttfts = ttfts
        self.segments = segments
        self.known = known
        self.caps = caps
        self.max_seq_len = max_seq_len

    def _cap(self, prompt: int, output: int, final: bool) -> int | None:
        if self.known:
            return None
        cap = self.caps[0] if final else self.caps[1]
        if self.max_seq_len is not None:
            cap = min(cap, self.max_seq_len - prompt)
        return max(cap, output)

    def stage(self, prompt: int, answer: int, think: int) -> StageSpec:
        """A single-round stage; with ``think`` > 0 a thinking segment precedes the answer."""
        segments = self.preset.segments(thinking_tokens=think) if think else self.segments[0]
        total = think + answer
        return StageSpec(
            prompt,
            total,
            self.ttfts[0],
            segments,
            output_tokens_known=self.known,
            max_new_tokens=self._cap(prompt, total, True),
        )

    def tool_chain(
        self, prompt: int, final_out: int, rounds: int, calls: list[int], tools: list[int], delays: list[float]
    ) -> tuple[StageSpec, ...]:
        """Rounds 1..rounds: each next prompt is the previous context plus the tool result."""
        stages = []
        context = prompt
        for k in range(rounds):
            final = k == rounds - 1
            out = final_out if final else calls[k]
            stages.append(
                StageSpec(
                    context,
                    out,
                    self.ttfts[1] if final else self.ttfts[0],
                    self.segments[1 if final else 0],
                    name="final" if final else f"call{k + 1}",
                    tool_delay_s=delays[k - 1] if k else 0.0,
                    output_tokens_known=self.known,
                    max_new_tokens=self._cap(context, out, final),
                )
            )
            if not final:
                context += out + tools[k]
        return tuple(stages)
