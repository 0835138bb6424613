"""Trace and length-file loaders. Every problem is a one-line ValueError / FileNotFoundError.

* Azure LLM inference CSV (Azure/AzurePublicDataset): ``TIMESTAMP, ContextTokens,
  GeneratedTokens``; timestamps as ``2023-11-16 18:17:03.9799600`` (ISO, optional zone) or
  plain seconds.
* Length CSV (Sarathi-Serve / Vidur processed traces): ``num_prefill_tokens,
  num_decode_tokens``; an Azure CSV is accepted as a length file too.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
LENGTH_COLUMN_SETS = (("num_prefill_tokens", "num_decode_tokens"), ("ContextTokens", "GeneratedTokens"))


@dataclass(frozen=True, eq=False)
class AzureTrace:
    """A loaded trace, sorted by time; ``arrival_s`` counts from the first request."""

    path: str
    arrival_s: np.ndarray  # float64, starts at 0
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if self.arrival_s.size else 0.0

    def window(self, start_s: float, end_s: float) -> np.ndarray:
        """Indices of the requests with ``start_s <= arrival_s < end_s``; ValueError if none."""
        if not (0 <= start_s < end_s):
            raise ValueError(f"trace window needs 0 <= start < end, got {start_s}:{end_s}")
        if start_s > self.duration_s:
            raise ValueError(
                f"trace window {start_s:g}:{end_s:g} s starts after the trace ends "
                f"({self.duration_s:.1f} s) in {self.path}"
            )
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        if hi <= lo:
            raise ValueError(f"trace window {start_s:g}:{end_s:g} s of {self.path} holds no request")
        return np.arange(lo, hi)

    def native_rate_rps(self, indices: np.ndarray | None = None) -> float:
        """Mean arrival rate ``(n - 1) / span`` of the selected requests (all by default)."""
        t = self.arrival_s if indices is None else self.arrival_s[indices]
        span = float(t[-1] - t[0]) if t.size else 0.0
        return (t.size - 1) / span if span > 0 else float("nan")


@dataclass(frozen=True, eq=False)
class LengthTable:
    """Prompt/output length pairs from a file."""

    path: str
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1


def _read_columns(path: str | Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header and column-major string cells; one-line errors for missing/empty/ragged files."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{what} file {p} is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise ValueError(f"{what} file {p} has a header but no rows")
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{what} file {p} line {lineno}: {len(row)} fields, header has {len(header)}")
    return header, [list(col) for col in zip(*body)]


def _column(header: list[str], cols: list[list[str]], name: str) -> list[str]:
    lowered = [h.lower() for h in header]
    return cols[lowered.index(name.lower())]


def _has_columns(header: list[str], names: tuple[str, ...]) -> bool:
    lowered = {h.lower() for h in header}
    return all(n.lower() in lowered for n in names)


def _token_counts(cells: list[str], name: str, path: str) -> np.ndarray:
    """Integer token counts; zeros become 1 (a zero-length prompt/output is still one step)."""
    try:
        vals = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        bad = next(i for i, c in enumerate(cells) if not _is_float(c))
        raise ValueError(f"{path} line {bad + 2}: column {name} holds {cells[bad]!r}, not a number") from None
    bad_idx = np.flatnonzero(~np.isfinite(vals) | (vals < 0) | (vals != np.floor(vals)))
    if bad_idx.size:
        i = int(bad_idx[0])
        raise ValueError(f"{path} line {i + 2}: column {name} holds {cells[i]!r}, not a token count >= 0")
    return np.maximum(vals.astype(np.int64), 1)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _timestamps_s(cells: list[str], path: str) -> np.ndarray:
    """Seconds (float64, absolute) from numeric or ISO-8601 timestamps."""
    if _is_float(cells[0]):
        return _float_seconds(cells, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stamps = np.array([c.strip() for c in cells], dtype="datetime64[ns]")
        ns = stamps.astype(np.int64)
        return (ns - ns.min()).astype(np.float64) / 1e9
    except (ValueError, DeprecationWarning, UserWarning):
        pass  # zone suffixes and other ISO variants: the slower stdlib parser below
    out = np.empty(len(cells), dtype=np.float64)
    for i, c in enumerate(cells):
        try:
            out[i] = datetime.fromisoformat(c.strip()).timestamp()
        except ValueError:
            raise ValueError(f"{path} line {i + 2}: TIMESTAMP {c!r} is not a time") from None
    return out


def _float_seconds(cells: list[str], path: str) -> np.ndarray:
    try:
        return np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        bad = next(i for i, c in enumerate(cells) if not _is_float(c))
        raise ValueError(f"{path} line {bad + 2}: TIMESTAMP {cells[bad]!r} is not a time") from None


def load_azure_trace(path: str | Path) -> AzureTrace:
    """Load an Azure LLM inference CSV (TIMESTAMP, ContextTokens, GeneratedTokens)."""
    header, cols = _read_columns(path, "trace")
    if not _has_columns(header, AZURE_COLUMNS):
        missing = [c for c in AZURE_COLUMNS if c.lower() not in {h.lower() for h in header}]
        raise ValueError(f"trace file {path} lacks column(s) {', '.join(missing)} (Azure LLM inference format)")
    t = _timestamps_s(_column(header, cols, "TIMESTAMP"), str(path))
    prompt = _token_counts(_column(header, cols, "ContextTokens"), "ContextTokens", str(path))
    output = _token_counts(_column(header, cols, "GeneratedTokens"), "GeneratedTokens", str(path))
    order = np.argsort(t, kind="stable")  # published traces are sorted; others need not be
    t = t[order]
    return AzureTrace(str(path), t - t[0], prompt[order], output[order])


def load_lengths_csv(path: str | Path) -> LengthTable:
    """Load prompt/output length pairs (num_prefill_tokens, num_decode_tokens, or Azure columns)."""
    header, cols = _read_columns(path, "lengths")
    for p_name, o_name in LENGTH_COLUMN_SETS:
        if _has_columns(header, (p_name, o_name)):
            prompt = _token_counts(_column(header, cols, p_name), p_name, str(path))
            output = _token_counts(_column(header, cols, o_name), o_name, str(path))
            return LengthTable(str(path), prompt, output)
    wanted = " or ".join("+".join(s) for s in LENGTH_COLUMN_SETS)
    raise ValueError(f"lengths file {path} lacks columns {wanted}")
