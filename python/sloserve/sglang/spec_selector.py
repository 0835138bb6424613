"""Replacement for SGLang's ``AdaptiveSpeculativeParams`` (EAGLE/EAGLE3, topk 1).

SGLang builds the selector deep inside its speculative worker with fixed arguments and asks it
only ``get_steps_for_batch(batch_size)``; it cannot see the batch's requests. The scheduler
(same process) therefore publishes the running batch's tightest TPOT SLO and KV context through
``publish``, a class-level slot (process-local state, kept on purpose: SGLang offers no way to
inject it). Without an SLO in the batch, SGLang's own EMA-based choice is used unchanged.
"""

from __future__ import annotations

from sglang.srt.speculative.adaptive_spec_params import AdaptiveSpeculativeParams

from sloserve.sglang.spec_choice import AlphaEstimator, choose_steps


class SloSpeculativeParams(AdaptiveSpeculativeParams):
    _batch_tpot_s: float | None = None
    _batch_kv_read_tokens: int = 0

    def __init__(self, initial_steps: int, cfg_path: str | None = None, perf=None) -> None:
        super().__init__(initial_steps, cfg_path)
        if perf is None:
            from sloserve.perf import get_model
            from sloserve.sglang.config import load_config

            perf = get_model(load_config().perf_model)
        self.perf = perf
        self.alpha = AlphaEstimator()
        self._last_steps: int | None = None

    @classmethod
    def publish(cls, tightest_tpot_s: float | None, kv_read_tokens: int) -> None:
        cls._batch_tpot_s = tightest_tpot_s
        cls._batch_kv_read_tokens = int(kv_read_tokens)

    def get_steps_for_batch(self, batch_size: int) -> int:
        tpot = type(self)._batch_tpot_s
        if tpot is None:
            self._last_steps = None
            return super().get_steps_for_batch(batch_size)
        steps = choose_steps(
            self.candidate_steps, tpot, self.alpha.alpha, batch_size, type(self)._batch_kv_read_tokens, self.perf
        )
        self._last_steps = steps
        return steps

    def on_verify_complete(self, num_correct_drafts_per_req: list[int], batch_size: int) -> int | None:
        result = super().on_verify_complete(num_correct_drafts_per_req, batch_size)
        last = self._last_steps
        if last is None:
            return result
        self.alpha.update(list(num_correct_drafts_per_req), last)
        steps = self.get_steps_for_batch(batch_size)
        return steps if steps != last else None
