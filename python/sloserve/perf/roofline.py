"""Roofline batch-time model computed from a GPU spec and a model architecture.

One step on one GPU of a tensor-parallel group (docs/perf_model.md has the equations):

    T = fixed + max(C + g*M, M + g*C)     with C = n * gemm_flops_tok / F_gemm,
                                               M = W_bytes / B_gemm + n * act_bytes_tok / B_gemm
          + n * (elementwise + kv_write + all-reduce per token)
          + kv_read_tokens * kv_bytes_tok / B_kv
          + max(0, attn_pairs - kv_read_tokens) * attn_flops_pair / F_attn   (prefill attention)
          + spec_steps * draft_step

``F_x``/``B_x`` are peak FLOP/s and bandwidth times the measured efficiency. At fixed
``spec_steps``, ``kv_read_tokens`` and ``attn_pairs`` this is a max of two lines in
``num_tokens``; ``batch_time_s`` evaluates exactly those lines and ``max_tokens_within_s``
inverts them in closed form (no search), which the planner calls in inner loops.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from sloserve.perf.base import BatchTimeModel
from sloserve.perf.hardware import GpuSpec, ModelArch, get_arch, get_gpu

_NUM_GEMMS_PER_LAYER = 4  # QKV, output projection, MLP up(+gate), MLP down
_NUM_ELEMENTWISE_PER_LAYER = 6  # two norms, rope, activation, two residual adds
_NUM_ATTN_KERNELS_PER_LAYER = 1


@dataclass(frozen=True)
class RooflineConfig:
    gpu: GpuSpec = field(metadata={"help": "GPU spec (peaks and efficiencies)"})
    model: ModelArch = field(metadata={"help": "target model architecture"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel degree (GPUs per replica)"})
    draft: ModelArch | None = field(default=None, metadata={"help": "draft model for speculative decoding"})
    step_overhead_s: float = field(default=2e-3, metadata={"help": "per-step scheduler/sampling/launch overhead"})
    draft_step_overhead_s: float = field(default=1e-4, metadata={"help": "extra fixed cost of one draft step"})

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, got {self.tp}")


def linear_layer_s(gpu: GpuSpec, model: ModelArch, tp: int, num_tokens: float) -> float:
    """Roofline time of one layer's four linear operators (what Vidur's profiles time)."""
    flops, weight_bytes, act_bytes = _linear_layer_work(model, tp)
    compute = num_tokens * flops / (gpu.peak_flops * gpu.gemm_compute_eff)
    memory = (weight_bytes + num_tokens * act_bytes) / (gpu.hbm_bytes_per_s * gpu.gemm_bw_eff)
    return gemm_time(compute, memory, gpu.gemm_overlap_loss) + _NUM_GEMMS_PER_LAYER * gpu.gemm_fixed_s


def gemm_time(compute_s, memory_s, overlap_loss: float):
    """max(C, M) + g * min(C, M), written as max(C + g*M, M + g*C): still a max of two lines
    in num_tokens when C and M are linear in it (works on floats and numpy arrays)."""
    if isinstance(compute_s, float) and isinstance(memory_s, float):
        return max(compute_s + overlap_loss * memory_s, memory_s + overlap_loss * compute_s)
    return np.maximum(compute_s + overlap_loss * memory_s, memory_s + overlap_loss * compute_s)


def elementwise_layer_s(gpu: GpuSpec, model: ModelArch, tp: int, num_tokens: float) -> float:
    """One layer's norms, rope, activation and residual adds (memory-bound)."""
    per_token = _elementwise_bytes_per_token(model, tp)
    return (
        num_tokens * per_token / (gpu.hbm_bytes_per_s * gpu.elementwise_bw_eff)
        + _NUM_ELEMENTWISE_PER_LAYER * gpu.elementwise_fixed_s
    )


def _linear_layer_work(model: ModelArch, tp: int) -> tuple[float, float, float]:
    """(FLOPs per token, weight bytes, activation bytes per token) of one layer on one GPU."""
    h, q, kv, inter = model.hidden, model.q_dim, model.kv_dim, model.intermediate
    up_out = (2 if model.gated_mlp else 1) * inter
    flops = 2.0 * model.linear_params_per_layer / tp
    weight_bytes = model.bytes_per_param * model.linear_params_per_layer / tp
    # inputs and outputs of QKV, O, up, down; the TP-split side is divided by tp
    act_elems = (h + (q + 2 * kv) / tp) + (q / tp + h) + (h + up_out / tp) + (inter / tp + h)
    return flops, weight_bytes, model.bytes_per_param * act_elems


def _elementwise_bytes_per_token(model: ModelArch, tp: int) -> float:
    h = model.hidden
    act_elems = (3 if model.gated_mlp else 2) * model.intermediate / tp
    rope_elems = 2 * (model.q_dim + model.kv_dim) / tp
    # two norms read+write h; two residual adds read 2h, write h
    return model.bytes_per_param * (4 * h + 6 * h + rope_elems + act_elems)


@dataclass(frozen=True)
class RooflineTerms:
    """The model reduced to coefficients (seconds per unit)."""

    compute_per_token_s: float  # GEMM slope when compute-bound (layers + LM head)
    memory_per_token_s: float  # GEMM slope when weight-read-bound (activations)
    weights_s: float  # reading every weight once
    linear_per_token_s: float  # always-paid per-token work: elementwise, KV write, all-reduce
    fixed_s: float  # step overhead, kernel fixed costs, all-reduce latencies
    per_kv_token_s: float  # decode attention: reading one context token's KV
    per_attn_pair_s: float  # prefill attention: one (query, key) pair, all heads and layers
    per_spec_step_s: float  # one draft-model step
    gemm_overlap_loss: float = 0.0  # see GpuSpec.gemm_overlap_loss


def compute_terms(cfg: RooflineConfig) -> RooflineTerms:
    gpu, m, tp = cfg.gpu, cfg.model, cfg.tp
    layers = m.num_layers
    f_gemm = gpu.peak_flops * gpu.gemm_compute_eff
    b_gemm = gpu.hbm_bytes_per_s * gpu.gemm_bw_eff
    flops, weight_bytes, act_bytes = _linear_layer_work(m, tp)
    head_flops = 2.0 * m.lm_head_params / tp
    head_bytes = m.bytes_per_param * m.lm_head_params / tp
    kv_tok = m.kv_bytes_per_token(tp)
    b_kv = gpu.hbm_bytes_per_s * gpu.kv_bw_eff
    elementwise = layers * _elementwise_bytes_per_token(m, tp) / (gpu.hbm_bytes_per_s * gpu.elementwise_bw_eff)
    allreduce_tok = 0.0
    allreduce_fixed = 0.0
    if tp > 1:  # two ring all-reduces of the hidden state per layer
        ring_bytes = 2.0 * (tp - 1) / tp * m.hidden * m.bytes_per_param
        allreduce_tok = 2 * layers * ring_bytes / (gpu.link_bytes_per_s * gpu.link_eff)
        allreduce_fixed = 2 * layers * gpu.allreduce_latency_s
    fixed = cfg.step_overhead_s + layers * _layer_fixed_s(gpu) + allreduce_fixed
    heads_per_gpu = m.q_dim / tp
    return RooflineTerms(
        compute_per_token_s=(layers * flops + head_flops) / f_gemm,
        memory_per_token_s=layers * act_bytes / b_gemm,
        weights_s=(layers * weight_bytes + head_bytes) / b_gemm,
        linear_per_token_s=elementwise + kv_tok / b_kv + allreduce_tok,
        fixed_s=fixed,
        per_kv_token_s=kv_tok / b_kv,
        # QK^T and PV: 2 FLOPs each per head-dim element per pair
        per_attn_pair_s=4.0 * heads_per_gpu * layers / (gpu.peak_flops * gpu.attn_compute_eff),
        per_spec_step_s=_draft_step_s(cfg),
        gemm_overlap_loss=gpu.gemm_overlap_loss,
    )


def _draft_step_s(cfg: RooflineConfig) -> float:
    """One draft decode step: read the draft's weights once (it runs at the target's TP)."""
    if cfg.draft is None:
        return 0.0
    d, gpu = cfg.draft, cfg.gpu
    weights = d.bytes_per_param * (d.num_layers * d.linear_params_per_layer + d.lm_head_params) / cfg.tp
    return (
        weights / (gpu.hbm_bytes_per_s * gpu.gemm_bw_eff)
        + d.num_layers * _layer_fixed_s(gpu)
        + cfg.draft_step_overhead_s
    )


def _layer_fixed_s(gpu: GpuSpec) -> float:
    """Kernel fixed costs of one layer (the attention kernel counted like a GEMM)."""
    gemms = _NUM_GEMMS_PER_LAYER + _NUM_ATTN_KERNELS_PER_LAYER
    return gemms * gpu.gemm_fixed_s + _NUM_ELEMENTWISE_PER_LAYER * gpu.elementwise_fixed_s


class RooflineModel(BatchTimeModel):
    """The roofline as a max of two lines in num_tokens, with a closed-form inverse."""

    def __init__(self, cfg: RooflineConfig, name: str = "") -> None:
        self.cfg = cfg
        self.name = name or f"{cfg.model.name}-tp{cfg.tp}-{cfg.gpu.name}"
        self.terms = t = compute_terms(cfg)
        # the two lines' slopes and the intercept part that does not depend on the batch
        g = t.gemm_overlap_loss  # GEMMs: max(C + g*M, M + g*C), C = n*c, M = W + n*m
        self._k_compute = t.compute_per_token_s + g * t.memory_per_token_s + t.linear_per_token_s
        self._k_memory = t.memory_per_token_s + g * t.compute_per_token_s + t.linear_per_token_s
        self._b_compute = t.fixed_s + g * t.weights_s
        self._b_memory = t.fixed_s + t.weights_s

    def _shared_intercept(self, spec_steps: int, kv_read_tokens: int, attn_pairs: float) -> float:
        t = self.terms
        # Attention FLOPs are charged on the pairs beyond the KV reads: a decode's pairs
        # (context + 1) are already paid as KV reads, a prefill chunk's are not.
        prefill_pairs = attn_pairs - kv_read_tokens if attn_pairs > kv_read_tokens else 0.0
        return spec_steps * t.per_spec_step_s + kv_read_tokens * t.per_kv_token_s + prefill_pairs * t.per_attn_pair_s

    def lines(
        self, spec_steps: int = 0, kv_read_tokens: int = 0, attn_pairs: float = 0.0
    ) -> tuple[tuple[float, float], ...]:
        """(slope s/token, intercept s) of each line at this spec/KV/attention shape."""
        v = self._shared_intercept(spec_steps, kv_read_tokens, attn_pairs)
        return ((self._k_compute, self._b_compute + v), (self._k_memory, self._b_memory + v))

    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        v = self._shared_intercept(spec_steps, kv_read_tokens, attn_pairs)
        return max(
            self._k_compute * num_tokens + (self._b_compute + v), self._k_memory * num_tokens + (self._b_memory + v)
        )

    def max_tokens_within_s(
        self,
        time_s: float,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        added_context_tokens: float = 0.0,
        num_requests: int = 0,
    ) -> int:
        """Largest num_tokens with batch_time_s(num_tokens, ...) <= time_s, in closed form.

        ``attn_pairs`` is the attention work already in the batch. ``added_context_tokens``
        charges every added token that many attention pairs: the conservative linear bound
        for added prefill tokens (pass the longest context a chunk token can see, e.g. the
        prompt length); with it the answer satisfies
        ``batch_time_s(n, s, kv, attn_pairs + n * added_context_tokens) <= time_s``.
        ``num_requests`` is accepted and not charged (the roofline prices no per-request work).
        """
        v = self._shared_intercept(spec_steps, kv_read_tokens, attn_pairs)
        best = min(
            line_limit(self._k_compute, self._b_compute + v, time_s),
            line_limit(self._k_memory, self._b_memory + v, time_s),
        )
        if not added_context_tokens or best == 0:
            return best
        # the pairs term max(0, P - K + n*X) * c adds a second pair of lines: T is a max of four
        t = self.terms
        v_pairs = (
            spec_steps * t.per_spec_step_s
            + kv_read_tokens * t.per_kv_token_s
            + (attn_pairs - kv_read_tokens) * t.per_attn_pair_s
        )
        extra = added_context_tokens * t.per_attn_pair_s
        best = min(
            best,
            line_limit(self._k_compute + extra, self._b_compute + v_pairs, time_s),
            line_limit(self._k_memory + extra, self._b_memory + v_pairs, time_s),
        )
        return self._settle(best, time_s, spec_steps, kv_read_tokens, attn_pairs, added_context_tokens)

    def _settle(self, n: int, time_s: float, s: int, kv: int, pairs: float, ctx: float) -> int:
        """Fix rounding differences between the folded lines and batch_time_s (a token or so)."""
        bt = self.batch_time_s
        while n > 0 and bt(n, s, kv, pairs + n * ctx) > time_s:
            n -= 1
        while bt(n + 1, s, kv, pairs + (n + 1) * ctx) <= time_s:
            n += 1
        return n

    def breakdown(
        self, num_tokens: int, spec_steps: int = 0, kv_read_tokens: int = 0, attn_pairs: float = 0.0
    ) -> dict[str, float | str]:
        """The step's time split into terms (seconds); ``total_s`` equals batch_time_s."""
        t = self.terms
        compute = num_tokens * t.compute_per_token_s
        memory = t.weights_s + num_tokens * t.memory_per_token_s
        return {
            "gemm_s": gemm_time(float(compute), float(memory), t.gemm_overlap_loss),
            "gemm_bound": "compute" if compute >= memory else "memory",
            "per_token_s": num_tokens * t.linear_per_token_s,
            "kv_read_s": kv_read_tokens * t.per_kv_token_s,
            "prefill_attn_s": max(0.0, attn_pairs - kv_read_tokens) * t.per_attn_pair_s,
            "draft_s": spec_steps * t.per_spec_step_s,
            "fixed_s": t.fixed_s,
            "total_s": self.batch_time_s(num_tokens, spec_steps, kv_read_tokens, attn_pairs),
        }

    def __repr__(self) -> str:
        return f"RooflineModel({self.name!r})"


def line_limit(slope: float, intercept: float, time_s: float) -> int:
    """Largest integer n >= 0 with slope * n + intercept <= time_s, evaluated like batch_time_s."""
    if intercept > time_s:
        return 0
    if slope <= 0:
        return 1 << 40
    n = int(math.floor((time_s - intercept) / slope))
    # the division can round either way; settle on the float expression batch_time_s uses
    if slope * n + intercept > time_s:
        n -= 1
    elif slope * (n + 1) + intercept <= time_s:
        n += 1
    return max(n, 0)


def roofline(
    model: str,
    gpu: str,
    tp: int = 1,
    draft: str | None = None,
    name: str = "",
    gpu_overrides: dict | None = None,
    **overrides,
) -> RooflineModel:
    """Build a roofline model from registry names.

    ``gpu_overrides`` replace GpuSpec fields (a different HBM bandwidth, measured efficiencies);
    ``overrides`` go to RooflineConfig (step_overhead_s...). Unknown fields raise TypeError.
    """
    spec = get_gpu(gpu)
    if gpu_overrides:
        spec = dataclasses.replace(spec, **gpu_overrides)
    cfg = RooflineConfig(spec, get_arch(model), tp, get_arch(draft) if draft else None, **overrides)
    return RooflineModel(cfg, name)


def _preset(name: str, model: str, gpu: str, tp: int = 1, draft: str | None = None):
    def make() -> RooflineModel:
        return roofline(model, gpu, tp, draft, name=name)

    return make


# (model, tp, draft) per family; each is registered for A100 (80 GB) and H100 as NAME-GPU.
_FAMILIES = {
    "llama-3-8b": ("llama-3-8b", 1, "llama-3.2-1b"),
    "qwen2.5-7b": ("qwen2.5-7b", 1, "qwen2.5-0.5b"),
    "llama-2-7b": ("llama-2-7b", 1, "llama-68m"),
    "llama-2-13b": ("llama-2-13b", 1, "llama-68m"),
    "llama-2-70b-tp4": ("llama-2-70b", 4, "llama-2-7b"),
    "llama-3-70b-tp4": ("llama-3-70b", 4, "llama-3.2-1b"),
    "codellama-34b-tp2": ("codellama-34b", 2, "llama-68m"),
    # OPT rooflines, named apart from the paper-form OPT presets they are compared with
    "opt-6.7b-roofline": ("opt-6.7b", 1, "opt-125m"),
    "opt-13b-roofline": ("opt-13b", 1, "opt-125m"),
    "opt-13b-tp2-roofline": ("opt-13b", 2, "opt-125m"),
    "opt-30b-tp4-roofline": ("opt-30b", 4, "opt-125m"),
    "opt-66b-tp4-roofline": ("opt-66b", 4, "opt-125m"),
}

# name -> zero-arg factory; perf.presets.get_model looks names up here.
ROOFLINE_PRESETS: dict = {
    f"{family}-{gpu}": _preset(f"{family}-{gpu}", model, gpu, tp, draft)
    for family, (model, tp, draft) in _FAMILIES.items()
    for gpu in ("a100", "h100")
}
ROOFLINE_PRESETS.update(
    {
        f"{family}-{gpu}": _preset(f"{family}-{gpu}", model, gpu, tp, draft)
        for family, (model, tp, draft) in _FAMILIES.items()
        if family in ("llama-3-8b", "llama-2-7b", "qwen2.5-7b")
        for gpu in ("a100-40g", "h200")
    }
)
