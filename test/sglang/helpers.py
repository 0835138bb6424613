"""Real SGLang objects for the tests: requests, a CPU KV allocator and the radix cache."""

from __future__ import annotations

from array import array


def make_req(rid: str, prompt_tokens: int, max_new_tokens: int = 16, custom_params=None, first_token: int = 1):
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.sampling.sampling_params import SamplingParams

    ids = array("q", range(first_token, first_token + prompt_tokens))
    return Req(rid, "", ids, SamplingParams(max_new_tokens=max_new_tokens, custom_params=custom_params))


def make_pools(size_tokens: int = 8192):
    import torch
    from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.radix_cache import RadixCache

    allocator = TokenToKVPoolAllocator(size_tokens, torch.float16, "cpu", None, False)
    cache = RadixCache.create_simulated(mock_allocator=allocator)
    return allocator, cache
