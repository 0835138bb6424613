"""Build a tiny random Llama with a locally trained tokenizer, for serving SGLang on a CPU.

No model hub is needed: the tokenizer is a byte-level BPE trained in seconds on seeded random
words (``tokenizers``), the weights are random (``transformers``, seeded). The output is an
ordinary Hugging Face model directory that SGLang loads with ``--model-path DIR``. The
vocabulary is 16,384 tokens: SGLang's one-batch profiler draws token ids below 10,000.

    python -m sloserve.sglang.tiny_model /tmp/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)
MARKER = "sloserve-tiny-model.json"  # written last: its presence means the directory is complete


@dataclass(frozen=True)
class TinyModelConfig:
    vocab_size: int = field(
        default=16384, metadata={"help": "tokenizer and embedding size (>= 10000 for the profiler)"}
    )
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    num_layers: int = field(default=2, metadata={"help": "decoder layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads"})
    num_kv_heads: int = field(default=2, metadata={"help": "key/value heads (GQA)"})
    intermediate_size: int = field(default=256, metadata={"help": "MLP width"})
    max_position_embeddings: int = field(default=4096, metadata={"help": "context length the model declares"})
    seed: int = field(default=0, metadata={"help": "seed for the tokenizer corpus and the weights"})


def _corpus(seed: int, lines: int = 20000) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def word() -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))

    base = ["Hello, my name is", "The capital of France is", "def add(a, b): return a + b"]
    return base + [" ".join(word() for _ in range(20)) for _ in range(lines)]


def build_tokenizer(cfg: TinyModelConfig, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(cfg.seed), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def build_model(cfg: TinyModelConfig, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)


def build(out: str | Path, cfg: TinyModelConfig = TinyModelConfig()) -> Path:
    """Write the model directory (idempotent: an existing complete build is reused)."""
    out = Path(out)
    marker = out / MARKER
    wanted = json.dumps(cfg.__dict__, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(cfg, out)
    build_model(cfg, out)
    marker.write_text(wanted)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sloserve.sglang.tiny_model",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", help="directory to write the model into")
    p.add_argument("--num-layers", type=int, default=TinyModelConfig.num_layers, help="decoder layers")
    p.add_argument("--seed", type=int, default=TinyModelConfig.seed, help="seed for tokenizer and weights")
    ns = p.parse_args(argv)
    path = build(ns.out, TinyModelConfig(num_layers=ns.num_layers, seed=ns.seed))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
