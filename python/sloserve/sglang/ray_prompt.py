"""What the Ray ingress reads from an SGLang request body before routing it (pure, no I/O per call).

The router needs a request's prompt length, its output cap and its SLO tags; SGLang's three
generation routes carry them in different places (``/generate``: ``sampling_params``, possibly a
list for a batch; the OpenAI routes: ``max_tokens`` and a top-level ``custom_params``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from sloserve.runtime.tokenizer import HFTokenizer

log = logging.getLogger("sloserve.sglang.ray")
DEFAULT_MAX_NEW_TOKENS = {"/generate": 128, "/v1/completions": 16, "/v1/chat/completions": 128}
CHARS_PER_TOKEN = 4  # the fallback estimate when the model's tokenizer is not readable here


class PromptCounter:
    """Prompt tokens with the model's own tokenizer when the ingress can read it, else an estimate.

    Chat messages are counted without the chat template (a few tokens low per message): the
    router compares replicas with the same count, and the replica's plugin plans exact lengths.
    """

    def __init__(self, tokenizer_path: str | None) -> None:
        self.tokenizer = None
        if tokenizer_path:
            try:
                self.tokenizer = HFTokenizer(tokenizer_path)
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("ingress counts prompt tokens as characters / %d: %s", CHARS_PER_TOKEN, exc)

    def tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        return len(text) // CHARS_PER_TOKEN + 1

    def count(self, path: str, body: dict) -> int:
        if path == "/v1/chat/completions":
            return sum(self.tokens(message_text(m)) for m in body.get("messages") or [] if isinstance(m, dict))
        ids = body.get("input_ids")
        if ids:
            return sum(len(x) for x in ids) if isinstance(ids[0], list) else len(ids)
        text = body.get("text") if path == "/generate" else body.get("prompt")
        if isinstance(text, list):
            return sum(self.tokens(t) if isinstance(t, str) else len(t) for t in text)
        return self.tokens(text) if isinstance(text, str) else 1


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _sampling(body: dict) -> list[dict]:
    sp = body.get("sampling_params")
    if isinstance(sp, list):
        return [p for p in sp if isinstance(p, dict)]
    return [sp] if isinstance(sp, dict) else []


def max_new_tokens_of(path: str, body: dict) -> int:
    if path == "/generate":
        caps = [p.get("max_new_tokens") for p in _sampling(body)]
        cap = max((c for c in caps if isinstance(c, int)), default=None)
    else:
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(cap) if isinstance(cap, int) and cap > 0 else DEFAULT_MAX_NEW_TOKENS[path]


def custom_params_of(path: str, body: dict) -> dict[str, Any] | None:
    if path == "/generate":
        found = [p.get("custom_params") for p in _sampling(body)]
        return found[0] if found and isinstance(found[0], dict) else None
    custom = body.get("custom_params")
    return custom if isinstance(custom, dict) else None


def with_best_effort(path: str, body: dict) -> dict:
    """A copy of ``body`` carrying the router's best-effort verdict where the replica's plugin
    reads it (a copy: a request routed again after a refused connection starts from the original)."""
    body = copy.deepcopy(body)
    if path != "/generate":
        body["custom_params"] = {**(body.get("custom_params") or {}), "slo_routed_best_effort": True}
        return body
    if not _sampling(body):
        body["sampling_params"] = {}
    for params in _sampling(body):
        params["custom_params"] = {**(params.get("custom_params") or {}), "slo_routed_best_effort": True}
    return body
