"""Context lengths of the models behind the batch-time presets (``max_position_embeddings`` in
each model's public config.json), so a server on a preset refuses what the real model could
not take, as SGLang does with the model's own config."""

from __future__ import annotations

# Longest matching prefix of the preset name wins (presets are named <model>-<tp>-<gpu>).
CONTEXT_TOKENS_BY_PREFIX: dict[str, int] = {
    "opt-": 2048,
    "llama-2-": 4096,
    "toolllama-2-": 4096,
    "llama-3-": 8192,
    "llama-3.2-": 131072,
    "codellama-": 16384,
    "qwen2.5-": 32768,
    "r1-distill-qwen-": 131072,
    "llama-68m": 2048,
}


def model_context_tokens(preset: str) -> int | None:
    """The context length of the preset's model, or None when unknown (a fitted .json model)."""
    matches = [prefix for prefix in CONTEXT_TOKENS_BY_PREFIX if preset.startswith(prefix)]
    return CONTEXT_TOKENS_BY_PREFIX[max(matches, key=len)] if matches else None
