"""BenchConfig: every flag of benchmark/bench_serving.py, one frozen dataclass, the CLI generated.

Flag names follow SGLang 0.5.23's ``bench_serving`` where the meaning is the same
(``--backend``, ``--base-url``, ``--dataset-name``, ``--num-prompts``, ``--request-rate``...);
the SLO-specific flags are ours. Bad flags exit 2 with one line on stderr.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence

from sloserve.cli_dataclass import OneLineParser, add_dataclass_arguments, dataclass_values
from sloserve.perf.presets import preset_names
from sloserve.workloads import SCENARIOS, SLO_PRESETS


def _server_policies() -> list[str]:
    from sloserve.runtime.config import servable_policies  # noqa: PLC0415 (only for --help)

    return servable_policies()


BACKENDS = ("sglang", "sglang-oai", "sglang-oai-chat", "vllm", "openai", "openai-chat")
DATASETS = ("scenario", "random", "sharegpt")


@dataclass(frozen=True)
class BenchConfig:
    backend: str = field(
        default="sglang",
        metadata={
            "help": "API flavour: sglang (/generate), sglang-oai / vllm / openai (/v1/completions), sglang-oai-chat / openai-chat (/v1/chat/completions)",
            "choices": BACKENDS,
        },
    )
    base_url: tuple[str, ...] = field(
        default=(),
        metadata={"help": "server URL, e.g. http://127.0.0.1:30000 (repeat to compare servers)", "repeat": True},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "server host when no --base-url"})
    port: int | None = field(
        default=None, metadata={"help": "server port when no --base-url (default 30000, vllm 8000)"}
    )
    dataset_name: str = field(
        default="scenario",
        metadata={
            "help": "scenario (sloserve.workloads), random, or sharegpt (--dataset-path: ShareGPT JSON or a lengths CSV)",
            "choices": DATASETS,
        },
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "sharegpt: a ShareGPT JSON file (conversations) or a CSV of num_prefill_tokens,num_decode_tokens"
        },
    )
    scenario: str = field(default="chatbot", metadata={"help": "workload scenario", "names": lambda: list(SCENARIOS)})
    slo_class: str | None = field(
        default=None,
        metadata={
            "help": "SLO preset for random/sharegpt prompts (default: the scenario's class)",
            "names": lambda: list(SLO_PRESETS),
        },
    )
    num_prompts: int = field(default=100, metadata={"help": "programs to send"})
    random_input_len: int = field(default=1024, metadata={"help": "random dataset: prompt tokens"})
    random_output_len: int = field(default=128, metadata={"help": "random dataset: output tokens"})
    random_range_ratio: float = field(
        default=0.0, metadata={"help": "random dataset: lengths drawn uniformly in [ratio*len, len]"}
    )
    sharegpt_output_len: int | None = field(default=None, metadata={"help": "sharegpt: override every output length"})
    request_rate: float = field(default=math.inf, metadata={"help": "programs per second (inf: all at once)"})
    request_rates: str | None = field(
        default=None, metadata={"help": "comma-separated rates for a sweep (one fresh run each), e.g. 1,2,4"}
    )
    burstiness: float = field(
        default=1.0, metadata={"help": "coefficient of variation of Gamma inter-arrival times (1 = Poisson)"}
    )
    trace: str | None = field(
        default=None,
        metadata={"help": "Azure LLM inference trace CSV: arrivals (rescaled to --request-rate) and lengths"},
    )
    trace_window: str | None = field(default=None, metadata={"help": "START:END seconds of the trace to replay"})
    max_concurrency: int | None = field(default=None, metadata={"help": "at most this many requests in flight"})
    seed: int = field(default=1, metadata={"help": "seed of every random draw"})
    slo_scale: float = field(default=1.0, metadata={"help": "multiply every SLO (TTFT slowdowns, TPOTs) by this"})
    model: str = field(
        default="opt-13b-tp2-a100",
        metadata={
            "help": "batch-time model (sloserve.perf preset or .json) that resolves TTFT slowdowns into ms",
            "names": preset_names,
        },
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "model name in OpenAI requests (default: the server's /v1/models)"}
    )
    prompt_mode: str = field(
        default="auto",
        metadata={
            "help": "auto | ids | text: send token ids, or text (exact for the built-in byte tokenizer)",
            "choices": ("auto", "ids", "text"),
        },
    )
    no_slo_tags: bool = field(
        default=False, metadata={"help": "do not send custom_params SLO tags (attainment is still measured)"}
    )
    extra_request_body: str | None = field(
        default=None, metadata={"help": "JSON object merged into every request body, e.g. '{\"top_k\": 1}'"}
    )
    tag: str | None = field(default=None, metadata={"help": "free-form label stored in the output JSON"})
    tolerance: float = field(default=0.05, metadata={"help": "deadline tolerance of the attainment check"})
    warmup_requests: int = field(default=1, metadata={"help": "short unmeasured requests sent first"})
    request_timeout_s: float = field(default=600.0, metadata={"help": "per-request timeout"})
    output_file: str | None = field(default=None, metadata={"help": "append one JSON object per run to this file"})
    output_details: bool = field(default=False, metadata={"help": "include per-stage details in the output JSON"})
    disable_tqdm: bool = field(default=False, metadata={"help": "no progress bars"})
    policy: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "launch the embedded runtime with this --policy (repeat to compare policies)",
            "repeat": True,
            "names": _server_policies,
        },
    )
    server_args: str = field(
        default="", metadata={"help": "extra arguments for launched servers, e.g. '--time-scale 0.1 --dp-size 2'"}
    )
    capacity_search: bool = field(
        default=False, metadata={"help": "bisect on --request-rate for the highest rate meeting --capacity-target"}
    )
    capacity_target: float = field(default=0.9, metadata={"help": "attainment the capacity search must reach"})
    capacity_lo: float = field(default=0.25, metadata={"help": "capacity search: lowest rate (rps)"})
    capacity_hi: float = field(default=16.0, metadata={"help": "capacity search: highest rate (rps)"})
    capacity_iters: int = field(default=5, metadata={"help": "capacity search: bisection steps"})
    plot_dir: str | None = field(
        default=None, metadata={"help": "write comparison plots (attainment vs rate, per-tier bars) here"}
    )

    def __post_init__(self) -> None:
        for msg in _problems(self):
            raise ValueError(msg)

    @property
    def urls(self) -> tuple[str, ...]:
        if self.base_url:
            return tuple(u.rstrip("/") for u in self.base_url)
        port = self.port if self.port is not None else (8000 if self.backend == "vllm" else 30000)
        return (f"http://{self.host}:{port}",)

    @property
    def rates(self) -> tuple[float, ...]:
        if self.request_rates:
            return tuple(float(x) for x in self.request_rates.split(","))
        return (self.request_rate,)

    @property
    def window_s(self) -> tuple[float, float] | None:
        if self.trace_window is None:
            return None
        start, _, end = self.trace_window.partition(":")
        return float(start), float(end)


def _problems(c: BenchConfig):
    """Validation messages, first one wins (one line each)."""
    if c.scenario not in SCENARIOS:
        yield f"--scenario must be one of {', '.join(SCENARIOS)}; got {c.scenario!r}"
    if c.slo_class is not None and c.slo_class not in SLO_PRESETS:
        yield f"--slo-class must be one of {', '.join(SLO_PRESETS)}; got {c.slo_class!r}"
    if c.model not in preset_names() and not c.model.endswith(".json"):
        yield f"--model must be a batch-time preset ({', '.join(preset_names())}); got {c.model!r}"
    if c.num_prompts < 1:
        yield f"--num-prompts must be >= 1, got {c.num_prompts}"
    if not (c.request_rate > 0):
        yield f"--request-rate must be > 0 (inf for all at once), got {c.request_rate}"
    if c.request_rates is not None:
        try:
            rates = [float(x) for x in c.request_rates.split(",")]
        except ValueError:
            yield f"--request-rates must be comma-separated numbers, got {c.request_rates!r}"
            return
        if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
            yield f"--request-rates must be positive finite numbers, got {c.request_rates!r}"
    if not (c.burstiness > 0 and math.isfinite(c.burstiness)):
        yield f"--burstiness must be a positive number, got {c.burstiness}"
    if not (c.slo_scale > 0 and math.isfinite(c.slo_scale)):
        yield f"--slo-scale must be a positive number, got {c.slo_scale}"
    yield from _source_problems(c)
    yield from _search_problems(c)


def _source_problems(c: BenchConfig):
    """Dataset and trace flags."""
    if c.trace_window is not None:
        start, sep, end = c.trace_window.partition(":")
        try:
            ok = bool(sep) and 0 <= float(start) < float(end)
        except ValueError:
            ok = False
        if not ok:
            yield f"--trace-window must be START:END with 0 <= START < END, got {c.trace_window!r}"
        if c.trace is None:
            yield "--trace-window needs --trace"
    if c.trace is not None and c.dataset_name != "scenario":
        yield "--trace replays arrivals and lengths for --dataset-name scenario only"
    if c.dataset_name == "sharegpt" and c.dataset_path is None:
        yield "--dataset-name sharegpt needs --dataset-path (a ShareGPT JSON or a lengths CSV)"
    if c.random_input_len < 1 or c.random_output_len < 1:
        yield "--random-input-len and --random-output-len must be >= 1"
    if not 0 <= c.random_range_ratio <= 1:
        yield f"--random-range-ratio must be in [0, 1], got {c.random_range_ratio}"


def _search_problems(c: BenchConfig):
    """Targets, capacity search and request options."""
    if c.max_concurrency is not None and c.max_concurrency < 1:
        yield f"--max-concurrency must be >= 1, got {c.max_concurrency}"
    if c.base_url and c.policy:
        yield "give --base-url or --policy (launch servers), not both"
    if not 0 < c.capacity_target <= 1:
        yield f"--capacity-target must be in (0, 1], got {c.capacity_target}"
    if not 0 < c.capacity_lo < c.capacity_hi:
        yield f"capacity search needs 0 < --capacity-lo < --capacity-hi, got {c.capacity_lo}, {c.capacity_hi}"
    if c.capacity_iters < 1:
        yield f"--capacity-iters must be >= 1, got {c.capacity_iters}"
    for url in c.base_url:
        if not url.startswith(("http://", "https://")):
            yield f"--base-url must start with http:// or https://, got {url!r}"
    if c.extra_request_body is not None:
        try:
            ok = isinstance(json.loads(c.extra_request_body), dict)
        except ValueError:
            ok = False
        if not ok:
            yield f"--extra-request-body must be a JSON object, got {c.extra_request_body!r}"
    if c.warmup_requests < 0 or c.tolerance < 0 or c.request_timeout_s <= 0:
        yield "--warmup-requests and --tolerance must be >= 0, --request-timeout-s > 0"


def build_parser(prog: str = "bench_serving.py") -> OneLineParser:
    parser = OneLineParser(prog=prog, description="SLO-aware serving benchmark (SGLang bench_serving compatible flags)")
    return add_dataclass_arguments(parser, BenchConfig)


def config_from_args(argv: Sequence[str] | None = None, prog: str = "bench_serving.py") -> BenchConfig:
    """Parse and validate; on a bad flag print one line and exit 2."""
    parser = build_parser(prog)
    values = dataclass_values(parser.parse_args(argv), BenchConfig)
    try:
        return BenchConfig(**values)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: error() exits
