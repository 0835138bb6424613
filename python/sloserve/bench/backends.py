"""Request bodies and stream parsing for each API flavour (SGLang native, OpenAI completions/chat).

Every request is streamed: token arrival times are what the attainment check needs. Stream
chunks may carry several tokens; the parser turns each chunk into "this many new tokens",
preferring a count the server reports (``meta_info.completion_tokens``, continuous usage)
over counting text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHAT = ("sglang-oai-chat", "openai-chat")
COMPLETIONS = ("sglang-oai", "vllm", "openai")


def endpoint(backend: str) -> str:
    if backend in CHAT:
        return "/v1/chat/completions"
    if backend in COMPLETIONS:
        return "/v1/completions"
    return "/generate"


def request_body(
    backend: str, prompt: str | list[int], max_new_tokens: int, custom: dict | None, model: str | None
) -> dict:
    """The JSON body: greedy, ignore_eos, exactly ``max_new_tokens`` tokens, SLO tags if any."""
    if backend not in CHAT + COMPLETIONS:
        sampling = {"max_new_tokens": max_new_tokens, "ignore_eos": True, "temperature": 0.0}
        if custom:
            sampling["custom_params"] = custom
        key = "text" if isinstance(prompt, str) else "input_ids"
        return {key: prompt, "sampling_params": sampling, "stream": True}
    body: dict = {
        "model": model or "default",
        "max_tokens": max_new_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if backend in CHAT:
        body["messages"] = [{"role": "user", "content": prompt if isinstance(prompt, str) else str(prompt)}]
    else:
        body["prompt"] = prompt
    if custom:
        body["custom_params"] = custom
    return body


@dataclass
class StreamState:
    """What the client has seen of one streamed response."""

    backend: str
    bytes_are_tokens: bool = False  # the server uses a byte tokenizer: a text delta's bytes are its tokens
    tokens: int = 0
    text: str = ""
    output_ids: list[int] = field(default_factory=list)
    meta: dict | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    # the HTTP status a stream ended with after its 200 header: SGLang streams a refusal (429,
    # 503...) as an error chunk or as an abort finish_reason carrying the status
    status: int | None = None

    def feed(self, chunk: dict) -> int:
        """Consume one SSE JSON chunk; return how many new tokens it carries."""
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            self.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            code = err.get("code") if isinstance(err, dict) else None
            self.status = code if isinstance(code, int) and 400 <= code < 600 else self.status
            return 0
        if self.backend in CHAT + COMPLETIONS:
            return self._feed_openai(chunk)
        meta = chunk.get("meta_info") or {}
        self.meta = meta or self.meta
        self._note_abort(meta.get("finish_reason"))
        ids = chunk.get("output_ids")
        if isinstance(ids, list):
            self.output_ids = ids
        self.text = chunk.get("text", self.text)
        self.prompt_tokens = meta.get("prompt_tokens", self.prompt_tokens)
        count = meta.get("completion_tokens")
        if count is None:
            count = len(ids) if isinstance(ids, list) else self.tokens + 1
        return self._advance(int(count))

    def _feed_openai(self, chunk: dict) -> int:
        if chunk.get("meta_info"):
            self.meta = chunk["meta_info"]
        usage = chunk.get("usage") or {}
        self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        delta = ""
        for choice in chunk.get("choices") or []:
            delta += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        self.text += delta
        if usage.get("completion_tokens") is not None:
            return self._advance(int(usage["completion_tokens"]))
        if self.meta and self.meta.get("completion_tokens") is not None and chunk.get("meta_info"):
            return self._advance(int(self.meta["completion_tokens"]))
        if not delta:
            return 0
        return self._advance(self.tokens + (len(delta.encode("utf-8")) if self.bytes_are_tokens else 1))

    def _note_abort(self, reason) -> None:
        if isinstance(reason, dict) and reason.get("type") == "abort":
            code = reason.get("status_code")
            if isinstance(code, int) and 400 <= code < 600:
                self.status = code
            self.error = str(reason.get("message") or "aborted")

    def _advance(self, total: int) -> int:
        new = max(total - self.tokens, 0)
        self.tokens += new
        return new
