"""Tokenizers for the HTTP front, and the synthetic text the simulated engine "generates".

The built-in tokenizer is byte level (one token per UTF-8 byte, ids 0..255, plus a few
special ids), so a fresh machine needs no download. ``--tokenizer-path`` loads a local Hugging
Face tokenizer through the ``tokenizers`` package when it is installed.

Synthetic output: the simulated engine only decides *how many* tokens each step produces; the
token ids come from a deterministic generator seeded by (server seed, request id), so the same
request on the same server always yields the same text.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Protocol, Sequence

_WORDS = (
    "the a model serves tokens under tight deadlines while planning batches with care and "
    "every request keeps its budget so answers stream back on time to each client"
).split()


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """One token per UTF-8 byte. Decoding replaces an incomplete trailing sequence."""

    name = "builtin-byte"
    BOS = 256
    EOS = 257
    vocab_size = 258

    @property
    def eos_token_id(self) -> int:
        return self.EOS

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A local Hugging Face ``tokenizer.json`` (directory or file), via the tokenizers package."""

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as _HF  # optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("--tokenizer-path needs the 'tokenizers' package (pip install tokenizers)") from exc
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        self._tok = _HF.from_file(file)
        self.name = path
        self.vocab_size = self._tok.get_vocab_size()
        eos = None
        for cand in ("</s>", "<|endoftext|>", "<eos>", "<|eot_id|>"):
            eos = self._tok.token_to_id(cand)
            if eos is not None:
                break
        self.eos_token_id = int(eos) if eos is not None else self.vocab_size - 1

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def load_tokenizer(path: str | None) -> Tokenizer:
    return ByteTokenizer() if not path else HFTokenizer(path)


def request_rng(seed: int, request_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def synthetic_output_ids(
    tokenizer: Tokenizer,
    seed: int,
    request_id: str,
    num_tokens: int,
    marker: str | None = None,
    marker_at: int | None = None,
) -> list[int]:
    """Deterministic output ids: seeded words, with ``marker`` spliced at token ``marker_at``.

    The marker lets the end-of-thinking detection of reasoning requests be exercised with a
    model that does not think: the synthetic "model" stops thinking at ``marker_at``.
    """
    rng = request_rng(seed, request_id)

    def words(count: int) -> list[int]:
        ids: list[int] = []
        while len(ids) < count:
            ids.extend(tokenizer.encode(" " + rng.choice(_WORDS)))
        return ids[:count]

    if marker and marker_at is not None and marker_at < num_tokens:
        head = words(marker_at)
        mark = tokenizer.encode(marker)
        return (head + mark + words(num_tokens))[:num_tokens]
    return words(num_tokens)
