"""benchmark/gpu_step_profile.py on the CPU with a tiny config: the CSV reads with the fitter's
reader, the rows carry profile_sglang.py's semantics, and the model is LlamaForCausalLM's math.
No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from load_script import load_script  # noqa: E402
from sloserve.perf.fit import load_profile_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmark" / "gpu_step_profile.py"
TINY = [
    "--device", "cpu", "--layers", "2", "--hidden", "128", "--heads", "4", "--kv-heads", "2",
    "--intermediate", "256", "--vocab", "512", "--max-positions", "512", "--threads", "1",
]  # fmt: skip


def load():
    return load_script("benchmark/gpu_step_profile.py")


def test_cpu_run_writes_a_profile_the_fitter_reads(tmp_path):
    csv_path, json_path, graph_path = tmp_path / "p.csv", tmp_path / "p.json", tmp_path / "g.csv"
    argv = TINY + [
        "--prefill-batches", "1", "2", "--prefill-lens", "8", "32", "--max-prefill-tokens", "32",
        "--decode-batches", "1", "3", "--decode-contexts", "16", "64", "--max-kv-tokens", "64",
        "--warmup", "1", "--repeats", "2",
        "--out", str(csv_path), "--json", str(json_path), "--graph-out", str(graph_path),
        "--all-graph-out", str(tmp_path / "a.csv"),
    ]  # fmt: skip
    # run as the device command does: a subprocess with only python/ on the path
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT / "python"), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    header = csv_path.read_text().splitlines()[0]
    assert header == "num_tokens,spec_steps,kv_read_tokens,time_ms,time_ms_min,time_ms_max,repeats"
    data = load_profile_csv(csv_path)
    # prefill (1,8) (2,8) (1,32); decode (1,16) (3,16) (1,64): B * C <= 64
    assert len(data) == 6
    assert list(data.num_tokens) == [8, 16, 32, 1, 3, 1]
    assert list(data.kv_read_tokens) == [0, 0, 0, 16, 48, 64]
    assert list(data.spec_steps) == [0] * 6
    assert (data.time_s > 0).all()
    assert len(load_profile_csv(csv_path, "time_ms_min")) == 6
    doc = json.loads(json_path.read_text())
    assert doc["environment"]["torch"] == torch.__version__
    assert doc["probe_logits_finite"] is True
    assert [r["repeats"] for r in doc["rows"]] == [2] * 6
    assert all(r["time_ms_min"] <= r["time_ms"] <= r["time_ms_max"] for r in doc["rows"])
    assert doc["graph_rows"] == []  # no CUDA graphs on the CPU: the graphed CSV holds the prefill rows
    assert len(load_profile_csv(graph_path)) == 3
    assert (tmp_path / "a.csv").read_text().splitlines() == [header]  # no graphed rows
    assert set(doc["spread"]) == {"prefill", "decode", "prefill_cuda_graph", "decode_cuda_graph"}


def test_compare_sets_rows_against_a_preset(tmp_path, capsys):
    mod = load()
    rows = [mod._row("prefill", 2, 64, [10.0, 11.0], "eager"), mod._row("decode", 8, 100, [5.0], "eager")]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"rows": rows}))
    assert mod.main(["--compare", str(path), "--preset", "llama-3-8b-h200"]) == 0
    out = capsys.readouterr().out
    assert "prefill: 1 rows" in out and "decode: 1 rows" in out


def test_plain_llama_matches_transformers_llama():
    transformers = pytest.importorskip("transformers")
    mod = load()
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # non-trivial norm weights, so a swapped norm would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    shape = mod.LlamaShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, vocab=300, max_positions=128)
    ours = mod.RandomLlama(shape, "cpu", torch.float32)
    sd = {k: v.detach() for k, v in hf.state_dict().items()}
    ours.embed = sd["model.embed_tokens.weight"]
    ours.norm = sd["model.norm.weight"]
    ours.lm_head = sd["lm_head.weight"]
    for i, lw in enumerate(ours.layers):
        p = f"model.layers.{i}."
        lw["ln1"] = sd[p + "input_layernorm.weight"]
        lw["ln2"] = sd[p + "post_attention_layernorm.weight"]
        lw["wqkv"] = torch.cat([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        lw["wo"] = sd[p + "self_attn.o_proj.weight"]
        lw["wgu"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        lw["wdown"] = sd[p + "mlp.down_proj.weight"]
    rot = hf.model.rotary_emb
    ours.set_rope(rot.inv_freq, float(getattr(rot, "attention_scaling", 1.0)))

    batch, context = 3, 20
    prompt = torch.randint(0, 300, (batch, context))
    nxt = torch.randint(0, 300, (batch, 1))
    with torch.no_grad():
        out = hf(prompt, use_cache=True)
        ref_prefill = out.logits[:, -1]
        ref_decode = hf(nxt, past_key_values=out.past_key_values, use_cache=True).logits[:, -1]
    cache = ours.new_cache(batch, context + 1)
    got_prefill = ours.forward(prompt, 0, cache)
    got_decode = ours.forward(nxt, context, cache)
    for got, ref in ((got_prefill, ref_prefill), (got_decode, ref_decode)):
        assert torch.isfinite(got).all()
        rel = (got - ref).norm() / ref.norm()
        assert rel < 1e-4, rel
    # the step is the forward pass and greedy sampling
    assert torch.equal(ours.step(nxt, context, cache), got_decode.argmax(-1))
