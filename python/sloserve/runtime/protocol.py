"""Request bodies of the SGLang-compatible API, parsed and validated (no I/O, unit-testable).

``/generate`` follows SGLang 0.5.23's GenerateReqInput and SamplingParams: optional fields may
be null, unknown top-level keys are dropped, an unknown key inside ``sampling_params`` is a 400.
The OpenAI routes follow the OpenAI protocol with SGLang's extensions (``custom_params``,
``ignore_eos``, ``top_k``, ...). The simulated engine honours the length controls (max tokens,
stop strings, stop token ids, ignore_eos); sampling knobs are validated and recorded only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from sloserve.runtime.slo_params import SloParamError


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, status_code: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status_code = status_code


# SamplingParams fields of SGLang 0.5.23 (API and internal ones msgspec would also accept).
SAMPLING_KEYS = frozenset(
    """
max_new_tokens stop stop_token_ids stop_regex temperature top_p top_k min_p frequency_penalty
presence_penalty repetition_penalty min_new_tokens n beam_width json_schema regex ebnf
structural_tag ignore_eos skip_special_tokens spaces_between_special_tokens no_stop_trim
stream_interval logit_bias sampling_seed custom_params watermark stop_strs stop_regex_strs
stop_str_max_len stop_regex_max_len is_normalized ebnf_full_assistant
""".split()
)


@dataclass
class Sampling:
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    no_stop_trim: bool = False
    min_new_tokens: int = 0
    custom_params: dict | None = None


@dataclass
class GenInput:
    """One generation: a prompt (text or ids), its sampling and SLO tags."""

    rid: str | None
    text: str | None
    input_ids: list[int] | None
    sampling: Sampling
    stream: bool = False
    extra: dict = field(default_factory=dict)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(d: Mapping, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = d.get(key)
    if v is None:
        return default
    if not _is_num(v):
        raise BadRequest(f"{key} must be a number, got {v!r}", key)
    if v < lo or v > hi or (lo_open and v == lo):
        raise BadRequest(f"{key} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}", key)
    return float(v)


def _opt_int(d: Mapping, key: str, default: int | None, minimum: int) -> int | None:
    v = d.get(key)
    if v is None:
        return default
    if not _is_int(v):
        raise BadRequest(f"{key} must be an integer, got {v!r}", key)
    if v < minimum:
        raise BadRequest(f"{key} must be at least {minimum}, got {v}", key)
    return v


def _bool(d: Mapping, key: str, default: bool = False) -> bool:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise BadRequest(f"{key} must be a boolean, got {v!r}", key)
    return v


# Limits on what one request may ask the front to do per token (docs/runtime.md, "Security and limits").
MAX_STOP_STRINGS = 64
MAX_STOP_LEN = 256  # characters per stop string
MAX_STOP_TOKEN_IDS = 1024
MAX_RID_LEN = 256


def _stop(v: Any, key: str = "stop") -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
        raise BadRequest(f"{key} must be a string or a list of strings", key)
    if len(v) > MAX_STOP_STRINGS:
        raise BadRequest(f"{key}: at most {MAX_STOP_STRINGS} stop strings, got {len(v)}", key)
    if any(len(s) > MAX_STOP_LEN for s in v):
        raise BadRequest(f"{key}: a stop string may be at most {MAX_STOP_LEN} characters", key)
    return tuple(s for s in v if s)


def _check_knobs(d: Mapping, max_key: str) -> None:
    """The sampling ranges SGLang verifies (values are not used by the simulated engine)."""
    _num(d, "temperature", 1.0, 0.0, math.inf)
    _num(d, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    _num(d, "min_p", 0.0, 0.0, 1.0)
    _num(d, "frequency_penalty", 0.0, -2.0, 2.0)
    _num(d, "presence_penalty", 0.0, -2.0, 2.0)
    _num(d, "repetition_penalty", 1.0, 0.0, 2.0, lo_open=True)
    top_k = d.get("top_k")
    if top_k is not None and (not _is_int(top_k) or (top_k < 1 and top_k != -1)):
        raise BadRequest(f"top_k must be -1 (disable) or at least 1, got {top_k!r}", "top_k")
    n = _opt_int(d, "n", 1, 1)
    if n != 1:
        raise BadRequest("n > 1 is not supported by this server", "n")
    if d.get("logit_bias") is not None and not isinstance(d.get("logit_bias"), dict):
        raise BadRequest("logit_bias must be an object", "logit_bias")


def _sampling_common(d: Mapping, max_new: int, custom: Any) -> Sampling:
    ids = d.get("stop_token_ids")
    if ids is not None and not (isinstance(ids, list) and all(_is_int(i) for i in ids)):
        raise BadRequest("stop_token_ids must be a list of integers", "stop_token_ids")
    if ids is not None and len(ids) > MAX_STOP_TOKEN_IDS:
        raise BadRequest(f"stop_token_ids: at most {MAX_STOP_TOKEN_IDS} ids, got {len(ids)}", "stop_token_ids")
    min_new = _opt_int(d, "min_new_tokens", 0, 0) or 0
    if min_new > max_new:
        raise BadRequest(f"min_new_tokens must be in [0, max_new_tokens({max_new})], got {min_new}", "min_new_tokens")
    if custom is not None and not isinstance(custom, dict):
        raise BadRequest("custom_params must be an object", "custom_params")
    return Sampling(
        max_new_tokens=max_new,
        stop=_stop(d.get("stop")),
        stop_token_ids=frozenset(ids or ()),
        ignore_eos=_bool(d, "ignore_eos"),
        no_stop_trim=_bool(d, "no_stop_trim"),
        min_new_tokens=min_new,
        custom_params=custom,
    )


def parse_sampling_params(sp: Any, default_max_new_tokens: int) -> Sampling:
    """SGLang's ``sampling_params`` object (null means all defaults)."""
    if sp is None:
        sp = {}
    if not isinstance(sp, dict):
        raise BadRequest("sampling_params must be an object", "sampling_params")
    unknown = sorted(set(sp) - SAMPLING_KEYS)
    if unknown:
        raise BadRequest(f"Unknown sampling parameter(s): {', '.join(unknown)}", f"sampling_params.{unknown[0]}")
    _check_knobs(sp, "max_new_tokens")
    max_new = _opt_int(sp, "max_new_tokens", default_max_new_tokens, 0)
    assert max_new is not None
    return _sampling_common(sp, max_new, sp.get("custom_params"))


def _prompt_ids(v: Any, key: str) -> list[int]:
    if not isinstance(v, list) or not v or not all(_is_int(i) and 0 <= i < 2**31 for i in v):
        raise BadRequest(f"{key} must be a non-empty list of non-negative integers", key)
    return v


def parse_generate(body: Any, default_max_new_tokens: int) -> list[GenInput]:
    """A /generate body; a batch (list of texts or of id lists) gives several inputs."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise BadRequest("Either text or input_ids should be provided (exactly one)", "text")
    if body.get("input_embeds") is not None or body.get("image_data") is not None:
        raise BadRequest("input_embeds and image_data are not supported by this server", "input_embeds")
    if body.get("return_logprob"):
        raise BadRequest("return_logprob is not supported by the simulated engine", "return_logprob")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", "stream")
    if text is not None:
        if isinstance(text, str):
            prompts: list[tuple[str | None, list[int] | None]] = [(text, None)]
        elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            prompts = [(t, None) for t in text]
        else:
            raise BadRequest("text must be a string or a non-empty list of strings", "text")
    elif isinstance(ids, list) and ids and isinstance(ids[0], list):
        prompts = [(None, _prompt_ids(x, "input_ids")) for x in ids]
    else:
        prompts = [(None, _prompt_ids(ids, "input_ids"))]
    sps = body.get("sampling_params")
    if isinstance(sps, list):
        if len(sps) != len(prompts):
            raise BadRequest("sampling_params list must match the batch size", "sampling_params")
    else:
        sps = [sps] * len(prompts)
    rids = body.get("rid")
    n = len(prompts)
    if rids is None:
        rids = [None] * n
    elif isinstance(rids, str) and rids:
        rids = [rids] if n == 1 else [f"{rids}_{i}" for i in range(n)]
    elif not (isinstance(rids, list) and len(rids) == n and all(isinstance(r, str) and r for r in rids)):
        raise BadRequest("rid must be a non-empty string, or a list with one per prompt", "rid")
    if stream and len(prompts) > 1:
        raise BadRequest("streaming a batched /generate is not supported by this server", "stream")
    batched = isinstance(text, list) or (isinstance(ids, list) and isinstance(ids[0], list))
    return [
        GenInput(rid, t, i, parse_sampling_params(sp, default_max_new_tokens), stream, {"batched": batched})
        for (t, i), sp, rid in zip(prompts, sps, rids)
    ]


def _openai_sampling(body: Mapping, max_keys: tuple[str, ...], default_max: int) -> Sampling:
    _check_knobs(body, max_keys[0])
    max_new = None
    for key in max_keys:
        max_new = _opt_int(body, key, None, 0)
        if max_new is not None:
            break
    custom = body.get("custom_params")
    sampling = _sampling_common(body, default_max if max_new is None else max_new, custom)
    sampling.min_new_tokens = _opt_int(body, "min_tokens", 0, 0) or 0
    return sampling


def _stream_flags(body: Mapping) -> tuple[bool, bool]:
    stream = _bool(body, "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    return stream, bool((opts or {}).get("include_usage"))


def parse_completion(body: Any, default_max: int = 16) -> GenInput:
    """POST /v1/completions (one prompt: a string, a list of ids, or a one-element list)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        text, ids = prompt, None
    elif isinstance(prompt, list):
        text, ids = None, _prompt_ids(prompt, "prompt")
    else:
        raise BadRequest("prompt must be a string or a list of token ids (one prompt per request)", "prompt")
    unsupported = _first_set(body, {"echo": (None, False), "logprobs": (None, False, 0), "suffix": (None, "")})
    if unsupported:
        raise BadRequest(f"{unsupported} is not supported by this server", unsupported)
    if body.get("best_of") not in (None, 1):
        raise BadRequest("best_of other than 1 is not supported by this server", "best_of")
    stream, usage = _stream_flags(body)
    sampling = _openai_sampling(body, ("max_tokens",), default_max)
    return GenInput(
        body.get("rid") if isinstance(body.get("rid"), str) else None,
        text,
        ids,
        sampling,
        stream,
        {"include_usage": usage},
    )


def chat_prompt(messages: Any) -> str:
    """A plain chat template: ``<|role|>\\ncontent\\n`` per message, then the assistant tag."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    parts: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role", "messages")
        content = msg.get("content")
        if isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(texts)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", "messages")
        parts.append(f"<|{msg['role']}|>\n{content}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def _first_set(body: dict, neutral: dict[str, tuple]) -> str | None:
    """The first field of ``neutral`` whose value is not one of its neutral values: the error
    names the field the client really set."""
    return next((key for key, ok in neutral.items() if key in body and body[key] not in ok), None)


_TEXT_SLO_KEYS = frozenset({"slo_class", "slo_stage", "slo_program_id"})
_INT_SLO_KEYS = frozenset({"slo_stage_index"})


def _metadata_value(key: str, value: Any) -> Any:
    """One ``metadata`` value (OpenAI allows strings only) as the JSON value ``custom_params``
    would carry: ``"40"`` -> 40.0, ``"true"`` -> True; anything else is left to the SLO checks."""
    if not isinstance(value, str) or key in _TEXT_SLO_KEYS:
        return value
    if key in ("slo_best_effort", "slo_routed_best_effort"):
        return {"true": True, "false": False}.get(value.strip().lower(), value)
    if key in _INT_SLO_KEYS or (key == "slo_think_tokens" and value.strip().isdigit()):
        try:
            return int(value)
        except ValueError:
            return value
    if key == "slo_think_tokens":
        return value
    try:
        return float(value)
    except ValueError:
        return value


def metadata_slo(body: Mapping) -> dict[str, Any]:
    """The ``slo_*`` keys of a chat request's OpenAI ``metadata``: the one place a gateway that
    rebuilds chat bodies from the OpenAI schema (``sglang-router`` 0.3.2 drops ``custom_params``
    there) keeps them. Explicit ``custom_params`` keys win."""
    meta = body.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BadRequest("metadata must be an object", "metadata")
    return {k: _metadata_value(k, v) for k, v in meta.items() if isinstance(k, str) and k.startswith("slo_")}


def parse_chat(body: Any, default_max: int) -> GenInput:
    """POST /v1/chat/completions."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    text = chat_prompt(body.get("messages"))
    unsupported = _first_set(
        body, {"logprobs": (None, False), "tools": (None, []), "response_format": (None, {"type": "text"})}
    )
    if unsupported:
        raise BadRequest(f"{unsupported} is not supported by this server", unsupported)
    stream, usage = _stream_flags(body)
    sampling = _openai_sampling(body, ("max_completion_tokens", "max_tokens"), default_max)
    from_metadata = metadata_slo(body)
    if from_metadata:
        sampling.custom_params = {**from_metadata, **(sampling.custom_params or {})}
    return GenInput(
        body.get("rid") if isinstance(body.get("rid"), str) else None,
        text,
        None,
        sampling,
        stream,
        {"include_usage": usage},
    )


def error_field(exc: Exception) -> str | None:
    if isinstance(exc, SloParamError):
        return f"custom_params.{exc.field_name}"
    return getattr(exc, "param", None)
