"""KV-cache memory accounted in blocks, per request."""

from __future__ import annotations


class KVPool:
    """Block accountant: tracks how many blocks each request holds against a capacity."""

    def __init__(self, capacity_tokens: int, block_size_tokens: int = 16) -> None:
        if capacity_tokens <= 0 or block_size_tokens <= 0:
            raise ValueError("KV capacity and block size must be positive")
        self.block_size_tokens = block_size_tokens
        self.capacity_blocks = capacity_tokens // block_size_tokens
        self._held: dict[str, int] = {}
        self._used_blocks = 0

    @property
    def capacity_tokens(self) -> int:
        return self.capacity_blocks * self.block_size_tokens

    @property
    def used_blocks(self) -> int:
        return self._used_blocks

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - self._used_blocks

    @property
    def free_tokens(self) -> int:
        return self.free_blocks * self.block_size_tokens

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size_tokens)

    def held_blocks(self, request_id: str) -> int:
        return self._held.get(request_id, 0)

    def extra_blocks(self, request_id: str, total_tokens: int) -> int:
        """Blocks that growing ``request_id`` to ``total_tokens`` would newly take."""
        return max(self.blocks_for(total_tokens) - self._held.get(request_id, 0), 0)

    def can_grow(self, request_id: str, total_tokens: int) -> bool:
        return self.extra_blocks(request_id, total_tokens) <= self.free_blocks

    def grow(self, request_id: str, total_tokens: int) -> bool:
        """Hold enough blocks for ``total_tokens``; False (and no change) when memory is short."""
        extra = self.extra_blocks(request_id, total_tokens)
        if extra > self.free_blocks:
            return False
        if extra:
            self._held[request_id] = self._held.get(request_id, 0) + extra
            self._used_blocks += extra
        return True

    def shrink(self, request_id: str, total_tokens: int) -> None:
        """Release blocks beyond ``total_tokens`` (after rejected speculative drafts)."""
        held = self._held.get(request_id, 0)
        keep = min(held, self.blocks_for(total_tokens))
        if keep < held:
            self._used_blocks -= held - keep
            self._held[request_id] = keep

    def free(self, request_id: str) -> int:
        """Release everything ``request_id`` holds; returns the blocks released."""
        held = self._held.pop(request_id, 0)
        self._used_blocks -= held
        return held
