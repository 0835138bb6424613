"""GPU and model-architecture specs for the roofline batch-time model.

Peak numbers are vendor data sheets (dense bf16, SXM parts). Efficiencies are the fraction of
peak a serving engine reaches:

- ``gemm_compute_eff``, ``gemm_bw_eff``, ``gemm_fixed_s``, ``gemm_overlap_loss`` were fitted to the Vidur per-operator
  profiles (linear layers of Llama-2-7B, Llama-3-8B, CodeLlama-34B at TP 1/2/4/8) with
  ``python scripts/check_perf_model.py --calibrate`` (efficiencies capped at 95% of peak). They
  come out above the README's 66-78% / 66-89% because the fit separates a fixed cost per GEMM
  and the overlap loss (activation traffic not hidden behind compute) from the peak rates; the
  achieved rates (time of a large or a tiny GEMM) match the README's ranges.
- ``elementwise_bw_eff`` was fitted the same way on the norm/activation/rope/add operators.
- ``attn_compute_eff``, ``kv_bw_eff``, the NVLink numbers and ``step_overhead_s`` are a-priori
  values (FlashAttention-2/FlashInfer-class kernels, NCCL/custom all-reduce, a CUDA-graph
  engine); the DistServe OPT latencies stay a held-out check of them (docs/perf_model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuSpec:
    name: str = field(metadata={"help": "GPU name used in preset names (a100, h100...)"})
    peak_flops: float = field(metadata={"help": "dense bf16 FLOP/s"})
    hbm_bytes_per_s: float = field(metadata={"help": "HBM bandwidth, bytes/s"})
    gemm_compute_eff: float = field(default=0.72, metadata={"help": "GEMM share of peak FLOP/s (compute-bound)"})
    gemm_bw_eff: float = field(default=0.80, metadata={"help": "GEMM share of peak bandwidth (weight-read-bound)"})
    gemm_fixed_s: float = field(default=4e-6, metadata={"help": "fixed cost of one GEMM kernel (launch, tail)"})
    gemm_overlap_loss: float = field(
        default=0.0,
        metadata={
            "help": "share of the smaller of a GEMM's compute and memory times not hidden behind the larger "
            "(0 = ideal roofline max, 1 = no overlap); rounds off the knee"
        },
    )
    elementwise_bw_eff: float = field(default=0.5, metadata={"help": "norm/act/rope/add share of bandwidth"})
    elementwise_fixed_s: float = field(default=2e-6, metadata={"help": "fixed cost of one element-wise kernel"})
    attn_compute_eff: float = field(default=0.5, metadata={"help": "prefill attention share of peak FLOP/s"})
    kv_bw_eff: float = field(default=0.7, metadata={"help": "decode attention share of bandwidth (KV reads)"})
    link_bytes_per_s: float = field(default=300e9, metadata={"help": "NVLink bandwidth per direction, bytes/s"})
    link_eff: float = field(default=0.7, metadata={"help": "all-reduce bus bandwidth share of the link"})
    allreduce_latency_s: float = field(default=10e-6, metadata={"help": "latency of one small all-reduce"})


# Efficiencies: see the module docstring and docs/perf_model.md (calibration table).
_A100_FIT = dict(
    gemm_compute_eff=0.76,
    gemm_bw_eff=0.86,
    gemm_fixed_s=6e-6,
    gemm_overlap_loss=0.5,
    elementwise_bw_eff=0.53,
    elementwise_fixed_s=1.25e-6,
)
_H100_FIT = dict(
    gemm_compute_eff=0.81,
    gemm_bw_eff=0.95,
    gemm_fixed_s=5.5e-6,
    gemm_overlap_loss=0.75,
    elementwise_bw_eff=0.62,
    elementwise_fixed_s=1.5e-6,
)

GPUS: dict[str, GpuSpec] = {
    "a100": GpuSpec("a100", 312e12, 2.039e12, **_A100_FIT, link_bytes_per_s=300e9, allreduce_latency_s=10e-6),
    # the 40 GB part: same chip, slower HBM2 (efficiencies assumed equal to the 80 GB part's)
    "a100-40g": GpuSpec("a100-40g", 312e12, 1.555e12, **_A100_FIT, link_bytes_per_s=300e9, allreduce_latency_s=10e-6),
    "h100": GpuSpec(
        "h100", 989e12, 3.35e12, **_H100_FIT, attn_compute_eff=0.45, link_bytes_per_s=450e9, allreduce_latency_s=8e-6
    ),
    # the H100 chip with HBM3e (141 GB, 4.8 TB/s); no profile, efficiencies assumed equal to the H100's
    "h200": GpuSpec(
        "h200", 989e12, 4.8e12, **_H100_FIT, attn_compute_eff=0.45, link_bytes_per_s=450e9, allreduce_latency_s=8e-6
    ),
}


@dataclass(frozen=True)
class ModelArch:
    """A dense decoder-only transformer (Llama, Qwen2, OPT families)."""

    name: str = field(metadata={"help": "architecture name (llama-3-8b...)"})
    num_layers: int = field(metadata={"help": "transformer layers"})
    hidden: int = field(metadata={"help": "model (residual) width"})
    num_heads: int = field(metadata={"help": "query heads"})
    num_kv_heads: int = field(metadata={"help": "key/value heads (GQA: fewer than num_heads)"})
    head_dim: int = field(metadata={"help": "width of one head"})
    intermediate: int = field(metadata={"help": "MLP inner width"})
    vocab: int = field(metadata={"help": "vocabulary size (LM head rows)"})
    gated_mlp: bool = field(default=True, metadata={"help": "SwiGLU (3 matrices) vs plain (2)"})
    bytes_per_param: int = field(default=2, metadata={"help": "weight bytes (2 = bf16/fp16)"})
    kv_bytes_per_elem: int = field(default=2, metadata={"help": "KV cache element bytes"})

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        """QKV and output projections."""
        return self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden

    @property
    def mlp_params_per_layer(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    @property
    def linear_params_per_layer(self) -> int:
        return self.attn_params_per_layer + self.mlp_params_per_layer

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def num_params(self) -> int:
        """Approximate parameter count (embedding and LM head counted once each; norms ignored)."""
        return self.num_layers * self.linear_params_per_layer + 2 * self.lm_head_params

    def kv_heads_per_gpu(self, tp: int) -> int:
        # KV heads are split across TP ranks; with fewer heads than ranks they are replicated.
        return max(1, -(-self.num_kv_heads // tp))

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV cache bytes one token occupies on one GPU (K and V, all layers)."""
        return 2 * self.num_layers * self.kv_heads_per_gpu(tp) * self.head_dim * self.kv_bytes_per_elem


def _llama(name, layers, hidden, heads, kv_heads, inter, vocab, head_dim=128) -> ModelArch:
    return ModelArch(name, layers, hidden, heads, kv_heads, head_dim, inter, vocab, gated_mlp=True)


def _opt(name, layers, hidden, heads, vocab=50272) -> ModelArch:
    return ModelArch(name, layers, hidden, heads, heads, hidden // heads, 4 * hidden, vocab, gated_mlp=False)


# Shapes from the models' public config.json files.
MODELS: dict[str, ModelArch] = {
    m.name: m
    for m in (
        _llama("llama-2-7b", 32, 4096, 32, 32, 11008, 32000),
        _llama("llama-2-13b", 40, 5120, 40, 40, 13824, 32000),
        _llama("llama-2-70b", 80, 8192, 64, 8, 28672, 32000),
        _llama("llama-3-8b", 32, 4096, 32, 8, 14336, 128256),
        _llama("llama-3-70b", 80, 8192, 64, 8, 28672, 128256),
        _llama("codellama-34b", 48, 8192, 64, 8, 22016, 32000),
        _llama("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064),
        _llama("llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, head_dim=64),
        _llama("qwen2.5-0.5b", 24, 896, 14, 2, 4864, 151936, head_dim=64),
        _llama("llama-68m", 2, 768, 12, 12, 3072, 32000, head_dim=64),
        _opt("opt-125m", 12, 768, 12),
        _opt("opt-6.7b", 32, 4096, 32),
        _opt("opt-13b", 40, 5120, 40),
        _opt("opt-30b", 48, 7168, 56),
        _opt("opt-66b", 64, 9216, 72),
    )
}


def get_gpu(name: str) -> GpuSpec:
    try:
        return GPUS[name]
    except KeyError:
        raise KeyError(f"unknown GPU {name!r}; choose from: {', '.join(sorted(GPUS))}") from None


def get_arch(name: str) -> ModelArch:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model architecture {name!r}; choose from: {', '.join(sorted(MODELS))}") from None
