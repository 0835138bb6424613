"""Time prefill and decode steps of a Llama-shaped model with random weights; write a profile CSV.

    python benchmark/gpu_step_profile.py --out profile.csv --json profile.json \
        [--graph-out profile_graph.csv] [--all-graph-out profile_all_graph.csv] [--layers 32] [--hidden 4096] [--heads 32] [--kv-heads 8] \
        [--intermediate 14336] [--vocab 128256] [--device cuda] [--repeats 7] [--warmup 3]
    python scripts/fit_perf_model.py profile.csv --holdout-frac 0.25
    python benchmark/gpu_step_profile.py --compare profile.json --preset llama-3-8b-h200

The model (default: the Llama-3.1-8B shape) is built on the device with random weights in the
chosen dtype (bf16 by default; nothing is downloaded) as plain PyTorch modules with the math of
transformers' LlamaForCausalLM (RMSNorm in float32, rotary embeddings, grouped-query attention
through ``scaled_dot_product_attention``, SiLU-gated MLP), with the QKV and gate/up projections
fused as serving engines fuse them. test/unit/test_gpu_step_profile.py checks it against
LlamaForCausalLM on the CPU. Plain modules rather than LlamaForCausalLM itself because the
transformers caches distort a decode step: DynamicCache concatenates (copies the whole KV cache
of every layer at every step), and StaticCache needs an attention mask, with which transformers'
SDPA path repeats the KV heads (another copy, 4x the KV bytes for Llama-3-8B). Here the KV cache
is preallocated per shape and a step writes its new tokens' K/V in place, as a paged engine does.

Rows (the semantics of scripts/profile_sglang.py):

* prefill, B sequences x L tokens from position 0: ``num_tokens = B * L``, no KV read; the step
  writes the KV cache and computes the logits of each sequence's last token (as engines do);
* decode, batch B at context C: the cache holds C tokens per sequence (filled by running the
  prefill, ``--kv-fill prefill``, or with random values, ``--kv-fill random``: a decode step's
  time does not depend on the values); a step is one token per sequence attending to C + 1
  positions: ``num_tokens = B``, ``kv_read_tokens = B * C``. Every timed step writes the same
  position, so the context stays C.

Each step ends with an argmax over the logits (greedy sampling). Timing: ``--warmup`` untimed
steps, then ``--repeats`` steps, each after a device synchronize, timed with CUDA events on a GPU
(a host clock on the CPU); ``time_ms`` is their median, ``time_ms_min``/``time_ms_max`` their
range. Steps run eagerly (a Python launch per kernel) unless ``--graph-out`` is given: then each
decode shape is also captured in a CUDA graph and its replays timed, and that CSV holds the same
prefill rows (eager, as SGLang runs prefill) with the graphed decode rows. ``--all-graph-out``
also captures every prefill shape and writes the graphed prefill and decode rows: GPU time with
the host's launch overhead taken out. CUDA graphs are not available on the CPU (those CSVs then
hold the eager prefill rows, or no rows).

Shapes: prefill pairs (B, L) with B * L <= ``--max-prefill-tokens``; decode pairs (B, C) with
B * C <= ``--max-kv-tokens``. A shape that runs out of device memory is skipped and logged.

The JSON holds the environment (device name, torch/CUDA versions), the config, per-row
details (kind, batch, length, every timed repeat, the spread), the measured copy bandwidth and
bf16 matrix rate on a GPU (``--no-ceilings`` skips them), and the wall time.

This file imports nothing from sloserve except in ``--compare`` (which reads a JSON written
here and sets each row against a sloserve preset), so it runs where only torch and numpy are.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

COLUMNS = ("num_tokens", "spec_steps", "kv_read_tokens", "time_ms", "time_ms_min", "time_ms_max", "repeats")


@dataclass(frozen=True)
class LlamaShape:
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    intermediate: int = 14336
    vocab: int = 128256
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    max_positions: int = 32768

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def num_params(self) -> int:
        d = self.head_dim
        per_layer = (
            self.hidden * (self.heads + 2 * self.kv_heads) * d  # qkv
            + self.heads * d * self.hidden  # o
            + 3 * self.hidden * self.intermediate  # gate, up, down
            + 2 * self.hidden  # norms
        )
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _sdpa_gqa_ok(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether scaled_dot_product_attention takes enable_gqa here (torch >= 2.5), on a GPU with
    the flash kernel (else the K/V heads are repeated: a copy, but flash attention after it)."""
    try:
        q = torch.randn(1, 4, 3, head_dim, device=device, dtype=dtype)
        kv = torch.randn(1, 2, 3, head_dim, device=device, dtype=dtype)
        if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
                F.scaled_dot_product_attention(q[:, :, :1], kv, kv, enable_gqa=True)
        else:
            F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError, ImportError):
        return False


class RandomLlama:
    """A Llama decoder (LlamaForCausalLM's math) over preallocated KV caches, random weights."""

    def __init__(self, shape: LlamaShape, device: str | torch.device, dtype: torch.dtype, seed: int = 0, std=0.02):
        self.shape, self.device, self.dtype = shape, torch.device(device), dtype
        gen = torch.Generator(device=self.device).manual_seed(seed)

        def w(*size: int) -> torch.Tensor:
            return torch.randn(*size, device=self.device, dtype=dtype, generator=gen) * std

        def norm() -> torch.Tensor:
            return 1.0 + torch.randn(shape.hidden, device=self.device, dtype=dtype, generator=gen) * 0.1

        d, h = shape.head_dim, shape.hidden
        self.embed = w(shape.vocab, h)
        self.layers = [
            {
                "ln1": norm(),
                "wqkv": w((shape.heads + 2 * shape.kv_heads) * d, h),
                "wo": w(h, shape.heads * d),
                "ln2": norm(),
                "wgu": w(2 * shape.intermediate, h),
                "wdown": w(h, shape.intermediate),
            }
            for _ in range(shape.layers)
        ]
        self.norm = norm()
        self.lm_head = w(shape.vocab, h)
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        self.set_rope(inv_freq)
        self.gqa = _sdpa_gqa_ok(self.device, dtype, d)

    def set_rope(self, inv_freq: torch.Tensor, scaling: float = 1.0) -> None:
        pos = torch.arange(self.shape.max_positions, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq.float().cpu())
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * scaling).to(self.device, self.dtype)
        self.sin = (emb.sin() * scaling).to(self.device, self.dtype)

    def new_cache(self, batch: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s = self.shape
        size = (batch, s.kv_heads, length, s.head_dim)
        return [
            (
                torch.empty(size, device=self.device, dtype=self.dtype),
                torch.empty(size, device=self.device, dtype=self.dtype),
            )
            for _ in range(s.layers)
        ]

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.shape.rms_eps)
        return weight * xf.to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        rep = self.shape.heads // self.shape.kv_heads
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), is_causal=causal
        )

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start: int, cache) -> torch.Tensor:
        """Logits of each sequence's last token, shape [B, vocab].

        ``tokens`` [B, n] sit at positions start .. start + n - 1. With ``start == 0`` this is a
        prefill (causal attention over the n tokens; the cache, if given, gets their K/V); with
        ``start > 0`` the cache holds positions < start and the n tokens attend to all of them
        (n = 1: a decode step) and to themselves causally."""
        s = self.shape
        b, n = tokens.shape
        d = s.head_dim
        cos = self.cos[start : start + n]
        sin = self.sin[start : start + n]
        x = F.embedding(tokens, self.embed)
        for i, lw in enumerate(self.layers):
            r = x
            qkv = F.linear(self._rms(x, lw["ln1"]), lw["wqkv"])
            q, k, v = qkv.split((s.heads * d, s.kv_heads * d, s.kv_heads * d), dim=-1)
            q = self._rope(q.view(b, n, s.heads, d).transpose(1, 2), cos, sin)
            k = self._rope(k.view(b, n, s.kv_heads, d).transpose(1, 2), cos, sin)
            v = v.view(b, n, s.kv_heads, d).transpose(1, 2)
            if cache is not None:
                kc, vc = cache[i]
                kc[:, :, start : start + n] = k
                vc[:, :, start : start + n] = v
            if start == 0:
                attn = self._attend(q, k, v, causal=True)
            elif n == 1:
                attn = self._attend(q, kc[:, :, : start + 1], vc[:, :, : start + 1], causal=False)
            else:
                raise ValueError("chunks after a context (start > 0, n > 1) are not supported")
            x = r + F.linear(attn.transpose(1, 2).reshape(b, n, s.heads * d), lw["wo"])
            r = x
            gate, up = F.linear(self._rms(x, lw["ln2"]), lw["wgu"]).chunk(2, dim=-1)
            x = r + F.linear(F.silu(gate) * up, lw["wdown"])
        return F.linear(self._rms(x[:, -1], self.norm), self.lm_head)

    def step(self, tokens: torch.Tensor, start: int, cache) -> torch.Tensor:
        """One engine step: the forward pass and greedy sampling."""
        return self.forward(tokens, start, cache).argmax(dim=-1)


# ----------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of fn after ``warmup`` untimed ones, each call isolated."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def graph_step(fn, device: torch.device):
    """Capture fn (static inputs) in a CUDA graph; returns the replay callable."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    _sync(device)
    return graph.replay, graph


def measure_ceilings(device: torch.device) -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and bf16 matrix rate, random data."""
    out = {}
    src = torch.randn(2 * 1024**3 // 2, device=device, dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    ms = statistics.median(time_steps(lambda d=dst, s=src: d.copy_(s), device, 3, 10))
    out["copy_tb_per_s"] = round(2 * src.numel() * 2 / (ms * 1e-3) / 1e12, 3)
    del src, dst
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = statistics.median(time_steps(lambda x=a, y=b: x @ y, device, 3, 10))
    out["bf16_matmul_tflop_per_s"] = round(2 * n**3 / (ms * 1e-3) / 1e12, 1)
    del a, b
    torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------
# the sweep


def _row(kind: str, batch: int, length: int, times: list[float], mode: str) -> dict:
    med = statistics.median(times)
    num_tokens = batch * length if kind == "prefill" else batch
    kv = 0 if kind == "prefill" else batch * length
    return {
        "kind": kind,
        "mode": mode,
        "batch": batch,
        "length": length,  # prefill: tokens per sequence; decode: context per sequence
        "num_tokens": num_tokens,
        "spec_steps": 0,
        "kv_read_tokens": kv,
        "time_ms": round(med, 4),
        "time_ms_min": round(min(times), 4),
        "time_ms_max": round(max(times), 4),
        "repeats": len(times),
        "spread_pct": round(100 * (max(times) - min(times)) / med, 2) if med > 0 else 0.0,
        "times_ms": [round(t, 4) for t in times],
    }


def write_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r[c] for c in COLUMNS])


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fill_cache(model: RandomLlama, cache, batch: int, context: int, how: str, max_tokens: int, gen) -> None:
    if how == "random":
        for kc, vc in cache:
            kc[:, :, :context].normal_(generator=gen)
            vc[:, :, :context].normal_(generator=gen)
        return
    chunk = max(1, max_tokens // context)
    for b0 in range(0, batch, chunk):
        b1 = min(batch, b0 + chunk)
        tokens = torch.randint(0, model.shape.vocab, (b1 - b0, context), device=model.device, generator=gen)
        model.step(tokens, 0, [(kc[b0:b1], vc[b0:b1]) for kc, vc in cache])


def sweep(args, model: RandomLlama, log, rows: list[dict], graph_rows: list[dict], skipped: list[str]) -> None:
    """Appends eager rows, graphed decode rows and skipped shapes as they are measured (a caller's
    ``finally`` can write what was measured before a failure)."""
    device = model.device
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    vocab = model.shape.vocab
    use_graphs = bool(args.graph_out or args.all_graph_out) and device.type == "cuda"
    graph_prefill = bool(args.all_graph_out)

    def time_graph(kind: str, b: int, n: int, fn) -> None:
        """Time fn's CUDA graph replays into graph_rows; on a failure, log it and stop graphing."""
        nonlocal use_graphs
        try:
            replay, graph = graph_step(fn, device)
            grow = _row(kind, b, n, time_steps(replay, device, args.warmup, args.repeats), "cuda_graph")
            graph_rows.append(grow)
            log(
                f"  graph {kind} B={b:4d} len={n:6d}         {grow['time_ms']:9.3f} ms  spread {grow['spread_pct']:.1f}%"
            )
            del replay, graph
        except RuntimeError as exc:  # keep the eager row; say why; no more graphs
            use_graphs = False
            msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            skipped.append(f"graph {kind} {b}x{n} (graphs off from here): {msg}")
            log(f"  graph {kind} B={b} len={n} failed, graphs off from here: {msg}")

    prefill = [(b, n) for n in args.prefill_lens for b in args.prefill_batches if b * n <= args.max_prefill_tokens]
    decode = [(b, c) for c in args.decode_contexts for b in args.decode_batches if b * c <= args.max_kv_tokens]
    log(f"{len(prefill)} prefill shapes, {len(decode)} decode shapes")
    for b, n in prefill:
        if n > model.shape.max_positions:
            skipped.append(f"prefill {b}x{n}: past max_positions")
            continue
        try:
            tokens = torch.randint(0, vocab, (b, n), device=device, generator=gen)
            cache = model.new_cache(b, n)
            times = time_steps(lambda t=tokens, k=cache: model.step(t, 0, k), device, args.warmup, args.repeats)
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            skipped.append(f"prefill {b}x{n}: out of memory")
            log(f"skip prefill {b}x{n}: out of memory")
            tokens = cache = None
            _free(device)
            continue
        row = _row("prefill", b, n, times, "eager")
        rows.append(row)
        log(f"prefill B={b:4d} L={n:6d} tokens={b * n:7d}  {row['time_ms']:9.3f} ms  spread {row['spread_pct']:.1f}%")
        if use_graphs and graph_prefill:
            time_graph("prefill", b, n, lambda t=tokens, k=cache: model.step(t, 0, k))
        del tokens, cache
        _free(device)
    for b, c in decode:
        if c + 1 > model.shape.max_positions:
            skipped.append(f"decode {b}x{c}: past max_positions")
            continue
        cache = tokens = None
        try:
            t0 = time.perf_counter()
            cache = model.new_cache(b, c + 1)
            fill_cache(model, cache, b, c, args.kv_fill, args.max_prefill_tokens, gen)
            _sync(device)
            fill_s = time.perf_counter() - t0
            tokens = torch.randint(0, vocab, (b, 1), device=device, generator=gen)
            times = time_steps(lambda t=tokens, c=c, k=cache: model.step(t, c, k), device, args.warmup, args.repeats)
            row = _row("decode", b, c, times, "eager")
            rows.append(row)
            log(
                f"decode  B={b:4d} C={c:6d} kv={b * c:8d}  {row['time_ms']:9.3f} ms  spread {row['spread_pct']:.1f}%"
                f"  (fill {fill_s:.1f} s)"
            )
            if use_graphs:
                time_graph("decode", b, c, lambda t=tokens, c=c, k=cache: model.step(t, c, k))
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            skipped.append(f"decode {b}x{c}: out of memory")
            log(f"skip decode {b}x{c}: out of memory")
        del cache, tokens
        _free(device)


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            gpu_name=p.name,
            gpu_capability=f"{p.major}.{p.minor}",
            gpu_sms=p.multi_processor_count,
            gpu_memory_gib=round(p.total_memory / 1024**3, 1),
        )
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


def _spread(rows: list[dict]) -> dict:
    if not rows:
        return {}
    s = sorted(r["spread_pct"] for r in rows)
    return {"median_pct": round(statistics.median(s), 2), "worst_pct": round(s[-1], 2)}


# ----------------------------------------------------------------------------------------------
# --compare: measured rows against a sloserve preset


def compare(json_path: str, preset: str, mode: str = "eager") -> int:
    """Print measured/predicted per row and per kind (median, worst) for a sloserve preset."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from sloserve.perf import get_model

    doc = json.loads(Path(json_path).read_text())
    model = get_model(preset)
    rows = list(doc["rows"])
    graphed = list(doc.get("graph_rows", []))
    if mode == "cuda_graph":  # --graph-out's profile: eager prefill rows, graphed decode rows
        rows = [r for r in rows if r["kind"] == "prefill"] + [r for r in graphed if r["kind"] == "decode"]
    elif mode == "all_graph":  # --all-graph-out's profile: every row graphed
        rows = graphed
    print(f"{preset} against {json_path} ({mode} decode)")
    print(
        f"{'kind':8s} {'B':>5s} {'len':>6s} {'tokens':>7s} {'kv':>8s} {'measured ms':>12s} {'preset ms':>10s} {'ratio':>6s}"
    )
    ratios: dict[str, list[float]] = {}
    for r in rows:
        b, n = r["batch"], r["length"]
        # attention pairs as perf.base.plan_shape counts them: n * (context + (n + 1) / 2)
        pairs = b * n * (n + 1) / 2 if r["kind"] == "prefill" else b * (n + 1)
        pred = model.batch_time_s(r["num_tokens"], 0, r["kv_read_tokens"], pairs) * 1e3
        ratio = r["time_ms"] / pred
        ratios.setdefault(r["kind"], []).append(ratio)
        print(
            f"{r['kind']:8s} {b:5d} {n:6d} {r['num_tokens']:7d} {r['kv_read_tokens']:8d}"
            f" {r['time_ms']:12.3f} {pred:10.3f} {ratio:6.2f}"
        )
    for kind, rs in ratios.items():
        worst = max(rs, key=lambda x: abs(math.log(x)))
        print(
            f"{kind}: {len(rs)} rows, measured/predicted median {statistics.median(rs):.2f},"
            f" min {min(rs):.2f}, max {max(rs):.2f}, worst (farthest from 1) {worst:.2f}"
        )
    return 0


# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="profile CSV (eager steps)")
    ap.add_argument("--json", help="environment, config, per-row details and spread")
    ap.add_argument(
        "--graph-out", help="also time decode steps as CUDA graph replays; CSV of eager prefill + graphed decode rows"
    )
    ap.add_argument(
        "--all-graph-out", help="also time prefill steps as CUDA graph replays; CSV of graphed prefill + decode rows"
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--seed", type=int, default=0)
    d = LlamaShape()
    ap.add_argument("--hidden", type=int, default=d.hidden)
    ap.add_argument("--layers", type=int, default=d.layers)
    ap.add_argument("--heads", type=int, default=d.heads)
    ap.add_argument("--kv-heads", type=int, default=d.kv_heads)
    ap.add_argument("--intermediate", type=int, default=d.intermediate)
    ap.add_argument("--vocab", type=int, default=d.vocab)
    ap.add_argument("--max-positions", type=int, default=d.max_positions)
    ap.add_argument("--prefill-batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--prefill-lens", type=int, nargs="+", default=[32, 128, 512, 2048, 8192])
    ap.add_argument("--max-prefill-tokens", type=int, default=16384)
    ap.add_argument("--decode-batches", type=int, nargs="+", default=[1, 4, 16, 32, 64, 128, 256])
    ap.add_argument("--decode-contexts", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--max-kv-tokens", type=int, default=262144, help="largest B * C of a decode shape")
    ap.add_argument("--kv-fill", choices=("prefill", "random"), default="prefill")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-ceilings", action="store_true", help="skip the copy/matmul ceiling measurements")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: leave as is)")
    ap.add_argument("--compare", metavar="JSON", help="set a JSON written here against --preset and exit")
    ap.add_argument("--preset", default="llama-3-8b-h200")
    ap.add_argument("--compare-mode", choices=("eager", "cuda_graph", "all_graph"), default="eager")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare:
        return compare(args.compare, args.preset, args.compare_mode)
    if not args.out:
        print("error: --out is required", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.hidden % args.heads or args.heads % args.kv_heads:
        print("error: hidden must divide by heads and heads by kv-heads", file=sys.stderr)
        return 2
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    shape = LlamaShape(
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads,
        intermediate=args.intermediate,
        vocab=args.vocab,
        max_positions=args.max_positions,
    )
    dtype = getattr(torch, args.dtype)
    env = environment(device)
    log(f"environment: {json.dumps(env)}")
    ceilings = {}
    if device.type == "cuda" and not args.no_ceilings:
        ceilings = measure_ceilings(device)
        log(f"ceilings: {ceilings}")
    model = RandomLlama(shape, device, dtype, seed=args.seed)
    _sync(device)
    log(f"model: {shape.num_params() / 1e9:.3f} B parameters, {args.dtype}, sdpa enable_gqa={model.gqa}")
    probe = model.forward(torch.randint(0, shape.vocab, (1, 16), device=device), 0, None)
    finite = bool(torch.isfinite(probe).all())
    log(f"probe logits finite: {finite}, std {probe.float().std().item():.3f}")
    rows: list[dict] = []
    graph_rows: list[dict] = []
    skipped: list[str] = []
    failed = None
    try:
        sweep(args, model, log, rows, graph_rows, skipped)
    except BaseException as exc:  # write what was measured, then fail
        failed = exc
        log(f"sweep failed after {len(rows)} rows: {type(exc).__name__}: {str(exc)[:300]}")
    write_csv(rows, args.out)
    log(f"wrote {len(rows)} rows to {args.out}")
    graph_decode = [r for r in graph_rows if r["kind"] == "decode"]
    if args.graph_out:
        grows = [r for r in rows if r["kind"] == "prefill"] + graph_decode
        write_csv(grows, args.graph_out)
        log(f"wrote {len(grows)} rows (eager prefill, {len(graph_decode)} graphed decode) to {args.graph_out}")
    if args.all_graph_out:
        write_csv(graph_rows, args.all_graph_out)
        log(f"wrote {len(graph_rows)} rows (graphed prefill and decode) to {args.all_graph_out}")
    doc = {
        "environment": env,
        "ceilings": ceilings,
        "config": asdict(shape) | {"head_dim": shape.head_dim, "num_params": shape.num_params()},
        "args": {k: v for k, v in vars(args).items() if k not in ("compare",)},
        "sdpa_enable_gqa": model.gqa,
        "probe_logits_finite": finite,
        "kv_bytes_per_token": shape.kv_bytes_per_token(torch.finfo(dtype).bits // 8),
        "rows": rows,
        "graph_rows": graph_rows,
        "skipped": skipped,
        "failed": None if failed is None else f"{type(failed).__name__}: {str(failed)[:1000]}",
        "spread": {
            "prefill": _spread([r for r in rows if r["kind"] == "prefill"]),
            "decode": _spread([r for r in rows if r["kind"] == "decode"]),
            "prefill_cuda_graph": _spread([r for r in graph_rows if r["kind"] == "prefill"]),
            "decode_cuda_graph": _spread(graph_decode),
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if device.type == "cuda":
        doc["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {args.json}")
    if failed is not None:
        raise failed
    log(f"spread (max-min)/median: {json.dumps(doc['spread'])}; skipped: {len(skipped)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    raise SystemExit(main())
