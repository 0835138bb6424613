"""The six scenarios (plus ``-S`` variants): which SLO classes, which lengths, which stages.

Lengths are drawn column-wise into a :class:`ProgramBatch` (numpy arrays, one row per
program) so that filtering and sampling 10k programs stays vectorized; only the programs kept
become ``ProgramSpec`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sloserve.workloads.lengths import LengthDist, get_length_model

PairSampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ReasoningLengths:
    """Reasoning programs: a short question, a long thinking run, a shorter answer.

    Not fitted to a data file (none is shipped): chosen to match published R1-distill
    behaviour on math/code prompts, i.e. questions of ~100 tokens, thinking of hundreds to a
    few thousand tokens (median ~1.2k), answers of a few hundred.
    """

    prompt: LengthDist = LengthDist.lognormal(120, 0.6, 16, 2048)
    thinking: LengthDist = LengthDist.lognormal(1200, 0.7, 64, 8192)
    answer: LengthDist = LengthDist.lognormal(200, 0.6, 8, 2048)


@dataclass(frozen=True)
class ToolLengths:
    """Tool-calling chains in the style of ToolBench/ToolLLaMA: a long prompt (instructions and
    API documentation), short function-call outputs, tool results appended to the context.
    """

    min_rounds: int = 2
    max_rounds: int = 5
    prompt: LengthDist = LengthDist.lognormal(900, 0.4, 128, 3072)
    call_output: LengthDist = LengthDist.lognormal(60, 0.5, 8, 512)
    tool_output: LengthDist = LengthDist.lognormal(150, 0.8, 8, 2048)
    final_output: LengthDist = LengthDist.lognormal(150, 0.6, 8, 1024)
    delay_s: tuple[float, float] = (0.2, 2.0)  # tool latency, uniform


@dataclass(frozen=True)
class Scenario:
    """A scenario: SLO classes (several are drawn in equal shares) and a program shape."""

    name: str
    kind: str  # "single" | "reasoning" | "tool-calling"
    classes: tuple[str, ...]  # SLO preset names
    lengths: tuple[str, ...] = ()  # built-in pair model per class ("single" kind)
    reasoning: ReasoningLengths = field(default_factory=ReasoningLengths)
    tools: ToolLengths = field(default_factory=ToolLengths)

    @property
    def length_description(self) -> str:
        if self.kind == "reasoning":
            return "reasoning (synthetic)"
        if self.kind == "tool-calling":
            return "tool-calling chains (synthetic)"
        return "+".join(dict.fromkeys(self.lengths))


def _make_scenarios() -> dict[str, Scenario]:
    base = [
        Scenario("chatbot", "single", ("chatbot",), ("sharegpt",)),
        Scenario("coder", "single", ("coder",), ("azure-code",)),
        Scenario("summarizer", "single", ("summarizer",), ("arxiv-summarization",)),
        Scenario("reasoning", "reasoning", ("reasoning",)),
        Scenario("tool-calling", "tool-calling", ("tool-calling",)),
        Scenario(
            "mixed", "single", ("chatbot", "coder", "summarizer"), ("sharegpt", "azure-code", "arxiv-summarization")
        ),
    ]
    out: dict[str, Scenario] = {}
    for s in base:
        out[s.name] = s
        relaxed = tuple(c + "-S" for c in s.classes)
        out[s.name + "-S"] = Scenario(s.name + "-S", s.kind, relaxed, s.lengths, s.reasoning, s.tools)
    return out


SCENARIOS: dict[str, Scenario] = _make_scenarios()


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; choices: {', '.join(SCENARIOS)}") from None


@dataclass(frozen=True, eq=False)
class ProgramBatch:
    """Column-wise lengths of drawn programs. Unused columns hold zeros."""

    cls: np.ndarray  # index into Scenario.classes
    prompt: np.ndarray  # first stage's prompt tokens
    output: np.ndarray  # output (single), answer (reasoning), final round's output (tools)
    think: np.ndarray  # reasoning: thinking tokens
    rounds: np.ndarray  # stages per program (1 unless tool-calling)
    call_out: np.ndarray  # (n, max_rounds - 1): intermediate rounds' outputs
    tool_out: np.ndarray  # (n, max_rounds - 1): tool result tokens appended after each call
    delay_s: np.ndarray  # (n, max_rounds - 1): tool delay before rounds 2..

    def __len__(self) -> int:
        return int(self.prompt.size)

    def total_tokens(self) -> np.ndarray:
        """The largest context each program reaches (the last stage's prompt plus output)."""
        live = np.arange(self.call_out.shape[1])[None, :] < (self.rounds - 1)[:, None]
        grown = ((self.call_out + self.tool_out) * live).sum(axis=1)
        return self.prompt + grown + self.think + self.output

    def take(self, idx: np.ndarray) -> "ProgramBatch":
        return ProgramBatch(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def concat(parts: list["ProgramBatch"]) -> "ProgramBatch":
        return ProgramBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("cls", "prompt", "output", "think", "rounds", "call_out", "tool_out", "delay_s")


def _class_shares(num_classes: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Equal shares (counts differ by at most one), in a seeded random order."""
    if num_classes == 1:
        return np.zeros(n, dtype=np.int64)
    return rng.permutation(np.resize(np.arange(num_classes, dtype=np.int64), n))


def draw_batch(
    scenario: Scenario,
    n: int,
    rng: np.random.Generator,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    sampler: PairSampler | None = None,
) -> ProgramBatch:
    """Draw ``n`` programs. ``pairs`` (given prompt/output arrays of length n, e.g. a trace) or
    ``sampler`` (e.g. rows of a length file) replace the scenario's built-in prompt/output
    lengths; the scenario's other lengths (thinking, tool rounds) stay synthetic.
    """
    cls = _class_shares(len(scenario.classes), n, rng)
    if pairs is not None:
        prompt, output = (np.asarray(a, dtype=np.int64) for a in pairs)
        if prompt.size != n or output.size != n:
            raise ValueError("draw_batch: pairs must hold n prompt and n output lengths")
    elif sampler is not None:
        prompt, output = sampler(n, rng)
    else:
        prompt, output = _builtin_pairs(scenario, cls, rng)
    width = scenario.tools.max_rounds - 1 if scenario.kind == "tool-calling" else 0
    zeros_n = np.zeros(n, dtype=np.int64)
    batch = dict(
        cls=cls,
        prompt=prompt,
        output=output,
        think=zeros_n,
        rounds=np.ones(n, dtype=np.int64),
        call_out=np.zeros((n, width), dtype=np.int64),
        tool_out=np.zeros((n, width), dtype=np.int64),
        delay_s=np.zeros((n, width), dtype=np.float64),
    )
    if scenario.kind == "reasoning":
        batch["think"] = scenario.reasoning.thinking.sample(n, rng)
    elif scenario.kind == "tool-calling":
        t = scenario.tools
        batch["rounds"] = rng.integers(t.min_rounds, t.max_rounds + 1, size=n)
        batch["call_out"] = t.call_output.sample(n * width, rng).reshape(n, width)
        batch["tool_out"] = t.tool_output.sample(n * width, rng).reshape(n, width)
        batch["delay_s"] = rng.uniform(t.delay_s[0], t.delay_s[1], size=(n, width))
    return ProgramBatch(**batch)


def _builtin_pairs(scenario: Scenario, cls: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = cls.size
    if scenario.kind == "reasoning":
        return scenario.reasoning.prompt.sample(n, rng), scenario.reasoning.answer.sample(n, rng)
    if scenario.kind == "tool-calling":
        return scenario.tools.prompt.sample(n, rng), scenario.tools.final_output.sample(n, rng)
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for c, model_name in enumerate(scenario.lengths):
        rows = np.flatnonzero(cls == c)
        prompt[rows], output[rows] = get_length_model(model_name).sample(rows.size, rng)
    return prompt, output


def output_cap_tokens(scenario: Scenario, source_max_output: int | None) -> tuple[int, int]:
    """Upper bounds on (final-stage output, intermediate-round output) a server may enforce as
    ``max_new_tokens`` when output lengths are hidden from the scheduler."""
    if source_max_output is not None:
        answer = source_max_output
    elif scenario.kind == "reasoning":
        answer = scenario.reasoning.answer.hi
    elif scenario.kind == "tool-calling":
        answer = scenario.tools.final_output.hi
    else:
        answer = max(get_length_model(m).output.hi for m in scenario.lengths)
    if scenario.kind == "reasoning":
        answer += scenario.reasoning.thinking.hi
    return answer, scenario.tools.call_output.hi
