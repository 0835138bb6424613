"""Response bodies: SGLang's /generate shape and the OpenAI completion/chat shapes."""

from __future__ import annotations

import time

import orjson

from sloserve.runtime.state import ReqState
from sloserve.runtime.tokenizer import Tokenizer


def sse(obj: dict | str) -> bytes:
    if isinstance(obj, str):
        return b"data: " + obj.encode() + b"\n\n"
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def generate_out(state: ReqState, tok: Tokenizer, now_s: float) -> dict:
    """SGLang's /generate output: cumulative text and ids, and meta_info."""
    return {
        "text": state.text(tok),
        "output_ids": state.output_ids[: state.visible],
        "meta_info": state.meta_info(now_s),
    }


def error_body(message: str, status: int, param: str | None = None, openai: bool = False) -> dict:
    if openai:
        kind = {
            400: "BadRequestError",
            404: "NotFoundError",
            429: "RateLimitError",
            503: "ServiceUnavailableError",
        }.get(status, "InternalServerError")
        return {"object": "error", "message": message, "type": kind, "param": param, "code": status}
    return {"error": {"message": message, "code": status, "param": param}}


def openai_finish(state: ReqState) -> tuple[str | None, str | None]:
    """(finish_reason, matched_stop) in OpenAI terms."""
    reason = state.finish_reason
    if reason is None:
        return None, None
    if reason["type"] == "stop":
        return "stop", reason.get("matched")
    if reason["type"] == "length":
        return "length", None
    return "abort", None


def usage(state: ReqState) -> dict:
    p, c = len(state.prompt_ids), state.visible
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "prompt_tokens_details": None}


class OpenAIFormatter:
    """Builds completion or chat bodies/chunks for one request."""

    def __init__(self, state: ReqState, tok: Tokenizer, model: str, chat: bool) -> None:
        self.state, self.tok, self.model, self.chat = state, tok, model, chat
        self.created = int(time.time())
        self.sent_chars = 0
        self.role_sent = False

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def _base(self, obj: str) -> dict:
        return {"id": self.state.client_rid, "object": obj, "created": self.created, "model": self.model}

    def full(self, now_s: float) -> dict:
        finish, matched = openai_finish(self.state)
        text = self.state.text(self.tok)
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "reasoning_content": None, "tool_calls": None},
                "logprobs": None,
                "finish_reason": finish,
                "matched_stop": matched,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "matched_stop": matched}
        return {
            **self._base(self.object_name),
            "choices": [choice],
            "usage": usage(self.state),
            "meta_info": self.state.meta_info(now_s),
        }

    def chunks(self, now_s: float, final: bool) -> list[dict]:
        """The chunks that carry what the client has not seen yet (and the finish on ``final``)."""
        out: list[dict] = []
        text = self.state.text(self.tok)
        delta = text[self.sent_chars :] if len(text) > self.sent_chars else ""
        self.sent_chars = max(self.sent_chars, len(text))
        obj = self.object_name + ".chunk" if self.chat else "text_completion"
        if self.chat and not self.role_sent:
            self.role_sent = True
            out.append(
                {
                    **self._base(obj),
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        if delta or final:
            finish, matched = openai_finish(self.state) if final else (None, None)
            if self.chat:
                choice = {
                    "index": 0,
                    "delta": {"content": delta} if delta else {},
                    "logprobs": None,
                    "finish_reason": finish,
                    "matched_stop": matched,
                }
            else:
                choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish, "matched_stop": matched}
            chunk = {**self._base(obj), "choices": [choice]}
            if final:
                chunk["meta_info"] = self.state.meta_info(now_s)
            out.append(chunk)
        return out

    def usage_chunk(self) -> dict:
        obj = self.object_name + ".chunk" if self.chat else "text_completion"
        return {**self._base(obj), "choices": [], "usage": usage(self.state)}
