"""Batch planner (no speculation): the prefill budget the admitted decodes leave, over time.

The executor (planner/execute.py) runs steps on a grid: step 0 starts at ``start_s`` and lasts
``first_len_s`` (= min(L, earliest decode deadline - start)), every later step lasts at most
``L`` = the tightest TPOT resident in the SLO tier (dynamic batch size: a step of ``L`` seconds
holds ``max_tokens_within_s(L)`` tokens). A decode is *forced* into step k when its next token
is due by ``s_k + 2L``; a decode not forced has its deadline after ``s_k + 2L`` and can wait for
the next step, which ends by ``s_k + 2L - L``. Hence every forced token is on time as long as
the step ends by ``s_k + L`` (and never after a forced deadline). What forced decodes leave in
each step is prefill budget.

Forced decodes by the end of step m-1 are the request's token deadlines ``<= T_m`` with
``T_1 = s_0 + 2L`` and ``T_m = s_1 + mL`` (m >= 2), capped by m (one token per step) and by the
decode tokens the request still has. This module computes those counts in numpy for every
resident at once; a speculative planner (issue 4) supplies its own ``Forecast`` the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS_S = 1e-9  # time slack used in the conservative direction (fewer steps, more decodes)


@dataclass(frozen=True)
class StepGrid:
    """The executor's step grid as the planner predicts it."""

    start_s: float
    first_len_s: float
    step_len_s: float
    first_tokens: int
    step_tokens: int
    first_all: bool = False  # a stretched step 0 that carries every decode (see make_grid)

    def __post_init__(self) -> None:
        if not (0 < self.first_len_s and self.step_len_s > 0):
            raise ValueError(f"bad grid lengths {self.first_len_s}, {self.step_len_s}")
        if not self.first_all and self.first_len_s > self.step_len_s + EPS_S:
            raise ValueError("only a stretched step 0 may be longer than the step length")

    @property
    def first_end_s(self) -> float:
        return self.start_s + self.first_len_s

    def steps_by(self, deadline_s) -> np.ndarray:
        """Number of whole steps that end by each deadline (0 before the first one ends)."""
        d = np.asarray(deadline_s, dtype=np.float64)
        m = np.atleast_1d(np.floor((d - self.first_end_s) / self.step_len_s + EPS_S) + 1)
        m[np.atleast_1d(d + EPS_S < self.first_end_s)] = 0
        return np.maximum(m, 0, out=m).astype(np.int64).reshape(d.shape)

    def step_end_s(self, m) -> np.ndarray:
        """End time of the first m steps (start_s for m = 0)."""
        m = np.asarray(m, dtype=np.int64)
        return np.where(m <= 0, self.start_s, self.first_end_s + (m - 1) * self.step_len_s)

    def forced_horizon_s(self, m) -> np.ndarray:
        """T_m: a token due by T_m is forced into one of the first m steps."""
        m = np.asarray(m, dtype=np.int64)
        h = np.atleast_1d(self.first_end_s + m * self.step_len_s)
        flat = m.reshape(h.shape)
        h[flat == 1] = np.inf if self.first_all else self.start_s + 2 * self.step_len_s
        h[flat <= 0] = -np.inf
        return h.reshape(m.shape)

    def steps_by_one(self, deadline_s: float) -> int:
        """``steps_by`` for one deadline in plain floats (same arithmetic, no numpy call)."""
        if not math.isfinite(deadline_s):
            return int(self.steps_by([deadline_s])[0])
        if deadline_s + EPS_S < self.first_end_s:
            return 0
        return max(math.floor((deadline_s - self.first_end_s) / self.step_len_s + EPS_S) + 1, 0)

    def forced_horizon_one_s(self, m: int) -> float:
        """``forced_horizon_s`` for one step count."""
        if m <= 0:
            return -math.inf
        if m == 1:
            return math.inf if self.first_all else self.start_s + 2 * self.step_len_s
        return self.first_end_s + m * self.step_len_s

    def tokens_by_one(self, m: int) -> int:
        return 0 if m <= 0 else self.first_tokens + (m - 1) * self.step_tokens

    def tokens_by(self, m) -> np.ndarray:
        """Tokens the first m steps hold in total (decode plus prefill)."""
        m = np.asarray(m, dtype=np.int64)
        return np.where(m <= 0, 0, self.first_tokens + (m - 1) * self.step_tokens)


@dataclass(frozen=True)
class DecodeLoad:
    """Admitted decode streams: first future token deadline, spacing (TPOT), tokens left."""

    first_due_s: np.ndarray
    tpot_s: np.ndarray
    cap_tokens: np.ndarray

    @staticmethod
    def empty() -> "DecodeLoad":
        z = np.zeros(0)
        return DecodeLoad(z, z.copy(), np.zeros(0, dtype=np.int64))

    @staticmethod
    def of(rows: list[tuple[float, float, int]]) -> "DecodeLoad":
        if not rows:
            return DecodeLoad.empty()
        a = np.asarray(rows, dtype=np.float64)
        return DecodeLoad(a[:, 0], a[:, 1], a[:, 2].astype(np.int64))

    def __len__(self) -> int:
        return int(self.first_due_s.size)


def forced_by(grid: StepGrid, load: DecodeLoad, m) -> np.ndarray:
    """Total forced decode tokens in the first m steps, for each m given."""
    m = np.atleast_1d(np.asarray(m, dtype=np.int64))
    if len(load) == 0:
        return np.zeros(m.shape, dtype=np.int64)
    # tokens due by T_m per (m, stream), in place on one buffer (this is the planner's largest array)
    due = np.subtract.outer(grid.forced_horizon_s(m), load.first_due_s)
    due /= load.tpot_s
    due += EPS_S
    np.floor(due, out=due)
    due += 1
    if not np.isfinite(load.first_due_s).all():
        due[np.isnan(due)] = 0  # inf - inf: such a stream counts nothing
    if grid.first_all:  # the stretched step 0 carried every stream once, due or not
        due[m >= 1] = np.maximum(due[m >= 1], 1)
    np.maximum(due, 0, out=due)
    np.minimum(due, load.cap_tokens, out=due)
    np.minimum(due, m[:, None], out=due)
    return due.sum(axis=1).astype(np.int64)


# Step counts up to this are kept in one dense array per ForcedTable; larger ones are counted
# one by one, only those asked for. Ordinary deadlines are a few dozen steps away (the built-in
# scenarios' plans: at most 17; the spare-budget curve's 8 s horizon: 80 at 0.1 s steps), so
# they never leave the dense array (test/integration/test_planner_far_deadline_sim.py). Without the
# cap a TTFT of 600 s at 10 ms steps made a 60,000 x residents array per (view, grid): work and
# memory grew with how far away a deadline is (issue 13). Either way the counts are the same
# integers: no decision depends on the split.
DENSE_STEPS = 256


class ForcedTable:
    """Forced decodes by m steps of one (grid, load), counted on demand: m = 0..n-1 dense (n at
    most ``DENSE_STEPS`` + 1, grown by doubling) and larger m sparse (sorted ``far_m`` with
    ``far_counts``). A policy keeps one per grid while its tier view is unchanged, and adds rows
    as it admits requests, so a burst of arrivals does not recount every resident stream.
    ``cells`` counts the (step count, stream) pairs this table evaluated: its work, which tests
    and benchmarks read. Arrays are replaced, never changed in place: derived tables share them."""

    def __init__(
        self,
        grid: StepGrid,
        load: DecodeLoad,
        counts: np.ndarray | None = None,
        horizon_s: np.ndarray | None = None,
        added: np.ndarray | None = None,
        far: tuple[np.ndarray, np.ndarray] | None = None,
        row: tuple[float, float, int] | None = None,
        dense_steps: int | None = None,
    ) -> None:
        self.grid, self.load = grid, load
        self.counts = counts if counts is not None else np.zeros(0, dtype=np.int64)
        self._horizon_s = horizon_s  # T_m for m = 0..len(counts)-1, shared by derived tables
        self.added = added  # with_row: what the added stream adds to the parent's dense counts
        self._row = row  # with_row: the added stream (first due, tpot, tokens left)
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        self.far_m, self.far_counts = far if far is not None else empty  # m > dense_steps, sorted
        # read when built (not as a default argument) so that a test may patch the module constant
        self.dense_steps = DENSE_STEPS if dense_steps is None else dense_steps
        self.cells = 0

    def get(self, m: np.ndarray) -> np.ndarray:
        top = int(m.max()) if m.size else 0
        if top > self.dense_steps:
            near = m <= self.dense_steps
            out = np.empty(m.shape, dtype=np.int64)
            if near.any():
                out[near] = self.get(m[near])
            out[~near] = self._far(m[~near])
            return out
        if top >= self.counts.size:
            self._grow(top)
        return self.counts[m]

    def get_one(self, m: int) -> int:
        if m > self.dense_steps:
            return int(self._far(np.array([m], dtype=np.int64))[0])
        if m >= self.counts.size:
            self._grow(m)
        return int(self.counts[m])

    def added_at(self, m: np.ndarray) -> np.ndarray:
        """What the stream ``with_row`` added adds at each step count (dense ones cached in the
        parent; sparse ones counted again, one stream each)."""
        near = m <= self.dense_steps
        if near.all():
            return self.added[m]
        out = np.empty(m.shape, dtype=np.int64)
        out[near] = self.added[m[near]]
        far = m[~near]
        out[~near] = self._stream_counts(self.grid.forced_horizon_s(far), far, *self._row)
        return out

    def _grow(self, top: int) -> None:
        want = min(max(top + 1, 2 * self.counts.size, 16), self.dense_steps + 1)
        extra = forced_by(self.grid, self.load, np.arange(self.counts.size, want))
        self.cells += extra.size * len(self.load)
        self.counts = np.concatenate([self.counts, extra])

    def _far(self, m: np.ndarray) -> np.ndarray:
        """Counts for step counts past the dense part, counting the ones not cached yet."""
        at = np.searchsorted(self.far_m, m)
        known = at < self.far_m.size
        known[known] = self.far_m[at[known]] == m[known]
        if not known.all():
            new = np.unique(m[~known])
            got = forced_by(self.grid, self.load, new)
            self.cells += new.size * len(self.load)
            pos = np.searchsorted(self.far_m, new)
            self.far_m, self.far_counts = np.insert(self.far_m, pos, new), np.insert(self.far_counts, pos, got)
            at = np.searchsorted(self.far_m, m)
        return self.far_counts[at]

    def _stream_counts(
        self, horizon_s: np.ndarray, m: np.ndarray, first_due_s: float, tpot_s: float, cap: int
    ) -> np.ndarray:
        """One stream's forced decodes by each of ``m`` steps (same formula as forced_by)."""
        due = np.floor((horizon_s - first_due_s) / tpot_s + EPS_S) + 1
        due = np.where(np.isnan(due), 0, due)
        if self.grid.first_all:
            due = np.where(m >= 1, np.maximum(due, 1), due)
        self.cells += m.size
        return np.minimum(np.minimum(np.maximum(due, 0), cap), m).astype(np.int64)

    def with_row(self, first_due_s: float, tpot_s: float, cap_tokens: int, load: DecodeLoad) -> "ForcedTable":
        """The table for ``load`` = this table's load plus one stream (same formula as forced_by)."""
        n = self.counts.size
        row = (first_due_s, tpot_s, cap_tokens)
        if n == 0 and not self.far_m.size:
            return ForcedTable(self.grid, load, added=self.counts, row=row, dense_steps=self.dense_steps)
        m = np.arange(n)
        if self._horizon_s is None or self._horizon_s.size != n:
            self._horizon_s = self.grid.forced_horizon_s(m)
        add = self._stream_counts(self._horizon_s, m, first_due_s, tpot_s, cap_tokens)
        far = None
        if self.far_m.size:
            fm = self.far_m
            far = (fm, self.far_counts + self._stream_counts(self.grid.forced_horizon_s(fm), fm, *row))
        return ForcedTable(self.grid, load, self.counts + add, self._horizon_s, add, far, row, self.dense_steps)


@dataclass(frozen=True)
class Forecast:
    """Cumulative prefill budget by given deadlines; ``feasible`` False if decodes alone overflow."""

    grid: StepGrid
    deadlines_s: np.ndarray
    steps: np.ndarray  # whole steps ending by each deadline
    horizon_s: np.ndarray  # T_m for those step counts
    budget_tokens: np.ndarray  # prefill tokens available by each deadline
    feasible: bool


def forecast(grid: StepGrid, load: DecodeLoad, deadlines_s, table: ForcedTable | None = None) -> Forecast:
    """The prefill budget available by each deadline after the forced decodes of ``load``."""
    d = np.atleast_1d(np.asarray(deadlines_s, dtype=np.float64))
    m = grid.steps_by(d)
    if table is not None:
        forced = table.get(m)
    else:
        uniq, inverse = np.unique(m, return_inverse=True)  # many deadlines share a step count
        forced = forced_by(grid, load, uniq)[inverse]
    budget = grid.tokens_by(m) - forced
    feasible = len(load) <= min(grid.first_tokens, grid.step_tokens)
    return Forecast(grid, d, m, grid.forced_horizon_s(m), budget.astype(np.int64), feasible)


@dataclass(frozen=True)
class PlannedBatch:
    start_s: float
    end_s: float
    decode_tokens: int
    prefill_budget_tokens: int


def batches(grid: StepGrid, load: DecodeLoad, num_steps: int) -> list[PlannedBatch]:
    """The first ``num_steps`` planned batches (for tests, docs and traces)."""
    m = np.arange(num_steps + 1)
    forced = forced_by(grid, load, m)
    tokens = grid.tokens_by(m)
    ends = grid.step_end_s(m)
    out = []
    for k in range(num_steps):
        dec = int(forced[k + 1] - forced[k])
        out.append(PlannedBatch(float(ends[k]), float(ends[k + 1]), dec, int(tokens[k + 1] - tokens[k]) - dec))
    return out


def reads_kv(perf) -> bool:
    """Whether the model charges the KV a step reads (a fitted or roofline KV term; the paper
    form has none): only then do step caps and grids pay for the residents' contexts."""
    return perf.batch_time_s(1, 0, 1 << 20) > perf.batch_time_s(1, 0, 0)


def reads_attn(perf) -> bool:
    """Whether the model charges prefill attention (``attn_pairs``; the roofline form): only
    then do grids bound each token's attention by the longest prefill context (docs/planner.md §2)."""
    return perf.batch_time_s(1, 0, 0, float(1 << 20)) > perf.batch_time_s(1, 0, 0)


def reads_requests(perf) -> bool:
    """Whether the model charges each request in a batch (a fitted per-request term): only then
    do step caps and grids pay for the requests in them."""
    return perf.batch_time_s(2048, 0, 0, 0.0, 1024) > perf.batch_time_s(2048, 0, 0, 0.0, 0)


def tokens_within(
    perf, time_s: float, kv_read_tokens: int = 0, attn_context_tokens: int = 0, num_requests: int = 0
) -> int:
    """Largest n whose batch time is at most ``time_s`` when every token attends to
    ``attn_context_tokens`` keys beyond the KV read, in a batch of ``num_requests`` requests:
    ``batch_time_s(n, 0, K, K + n X, R)``.

    With ``X`` at least the longest context a prefill token can reach (the longest prompt being
    prefilled) and at least 1 (a decode's own pair), that charge is an upper bound of any step's
    real attention: a chunk of ``n`` tokens at context ``c`` pairs ``n (c + (n + 1)/2) <= n X``.
    So a step of ``time_s`` really holds at least this many tokens (the executor fits its items
    to the exact time). ``X = 0`` is ``max_tokens_within_s``."""
    n = int(perf.max_tokens_within_s(time_s, 0, kv_read_tokens, num_requests=num_requests))
    if attn_context_tokens <= 0 or n <= 0:
        return n

    def fits(k: int) -> bool:
        pairs = kv_read_tokens + k * float(attn_context_tokens)
        return perf.batch_time_s(k, 0, kv_read_tokens, pairs, num_requests) <= time_s

    if fits(n):
        return n  # the model ignores attention (or the bound costs nothing here)
    lo, hi = 0, n  # fits(lo) (0 tokens: the caller's floors apply), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def kv_bucket(kv_read_tokens: int) -> int:
    """``kv_read_tokens`` rounded up to 4 significant bits (at most 1/8 more): a burst of
    arrivals that moves the KV bound a little keeps planning on the same grids and their caches."""
    if kv_read_tokens <= 16:
        return max(kv_read_tokens, 0)
    q = 1 << (kv_read_tokens.bit_length() - 4)
    return -(-kv_read_tokens // q) * q


def first_step_at_scale(
    first_len_s: float, step_len_s: float, first_end_s: float, soonest_prompt_s: float, within_steps: float
) -> bool:
    """Whether the first step of a committed plan runs at the calibrated scale instead of being
    sized for the tail (``make_grid``'s ``tail_factor``; ``StepExecutor.step``): a full-length
    step 0 with no admitted prompt (nor candidate) due within ``within_steps`` steps after its
    end. Its end matters at the tail only to a prompt due right after it, which the steps in
    between cannot shield (the authors' chatbot's last admitted miss at stop 34); an overrun
    before a later deadline is one more step's noise, which the scale already plans for. A
    step 0 cut short ends at a deadline and keeps the tail. The planner and the executor ask the
    same question, so step 0 holds what the plan counted (issue 15)."""
    return first_len_s >= step_len_s - EPS_S and soonest_prompt_s > first_end_s + within_steps * step_len_s


def make_grid(
    perf,
    start_s: float,
    step_len_s: float,
    earliest_due_s: float,
    kv_read_tokens: int = 0,
    fixed_tokens: int | None = None,
    stretch_end_s: float | None = None,
    attn_context_tokens: int = 0,
    num_requests: int = 0,
    tail_factor: float = 1.0,
) -> StepGrid:
    """The grid from ``start_s``: step 0 ends by the earliest decode deadline (and by start+L).

    Steps are sized at the KV read ``kv_read_tokens`` and ``num_requests`` requests and, with a
    model that charges prefill attention, with every token attending to ``attn_context_tokens``
    keys (``tokens_within``).

    With ``stretch_end_s`` step 0 instead runs until then (the caller keeps it at or before the
    earliest decode deadline and every admitted prefill deadline) and carries every decode:
    slack banked by early tokens buys one long, efficient step.

    ``tail_factor`` (planner/calibrate.py, <= 1): step 0 holds what the executor puts in it, a
    step sized to end by its planned end even at the calibration's tail ratio: the executor ends
    the first step of a committed plan so (``StepExecutor.step``), whether that end is a deadline
    or ``start + L``. Counted at its full length, a prompt the plan had promised to step 0 was
    cut short of its TTFT deadline by the executor (issue 15: first for a step 0 that ends at a
    deadline; then for a full-length one closely followed by the prompt's deadline, the authors'
    chatbot's last admitted miss). Its end (``first_end_s``) stays the planned one.
    """
    if stretch_end_s is not None:
        first = stretch_end_s - start_s
    else:
        first = min(step_len_s, earliest_due_s - start_s) if np.isfinite(earliest_due_s) else step_len_s
    first, held = max(first, 1e-6), max(first * tail_factor, 1e-6)

    def tokens(length_s: float) -> int:
        n = tokens_within(perf, length_s - EPS_S, kv_read_tokens, attn_context_tokens, num_requests)
        return min(n, fixed_tokens) if fixed_tokens else n

    return StepGrid(start_s, first, step_len_s, tokens(held), tokens(step_len_s), stretch_end_s is not None)
