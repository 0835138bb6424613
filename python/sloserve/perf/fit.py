"""Fit the paper's max-of-lines batch-time form to a measured profile.

A profile CSV has one row per measured step: ``num_tokens``, optionally ``spec_steps``,
``kv_read_tokens`` and ``num_requests`` (the requests in the batch), and ``time_ms`` or
``time_s``. The fitted form is

    T = max over lines l of (k1_l * num_tokens + k2_l * spec_steps + k3_l * kv_read_tokens
                             + k4_l * num_requests + k5_l * num_requests * [extend] + b_l)

where ``[extend]`` is 1 for a batch that computes prefill tokens (``num_tokens > num_requests``:
a chunk, alone or with decodes riding along) and 0 for a batch of decodes only.

with one line (ordinary least squares) or two (the breakpoint in num_tokens chosen by search,
each side fitted by least squares, then refined by reassigning points to the line that
attains the max). Quality is reported as R^2, MAPE and the share of under-predictions; the
planner trusts the model, so ``inflate`` can scale a fit until at most a chosen share of the
profile is under-predicted. Fits are written as JSON that ``get_model("path.json")`` loads.

Trust: ``holdout_split`` splits the rows by a seeded permutation so a fit can be scored on rows
it did not see (``score``), and ``fit_problems`` names what makes a fit untrustworthy (a
negative slope, a non-positive zero-shape time, a MAPE above a threshold);
scripts/fit_perf_model.py refuses such a fit unless forced. The KV term is fitted whenever the
profile's ``kv_read_tokens`` varies (decode rows at several contexts), the per-request terms
whenever a ``num_requests`` column varies apart from ``num_tokens`` (prefill rows next to decode
rows of many requests). A serving loop pays per request; SGLang's CPU path pays it in extend
batches (1.0-1.8 ms per request riding along a prefill chunk, against 14 us per token, measured
on its served steps) and hardly in decode-only ones. A per-request coefficient that comes out
negative is timing noise: it is fixed at 0 and the rest refitted.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sloserve.perf.base import BatchTimeModel, extend_requests
from sloserve.perf.roofline import line_limit

JSON_FORMAT = "sloserve-perf-lines/1"
REQUEST_TERMS = ("per_request_s", "per_extend_request_s")


@dataclass(frozen=True)
class ProfileData:
    num_tokens: np.ndarray
    spec_steps: np.ndarray
    kv_read_tokens: np.ndarray
    time_s: np.ndarray
    num_requests: np.ndarray | None = None  # None: the profile does not say (no per-request term)

    def __len__(self) -> int:
        return int(self.time_s.size)


@dataclass(frozen=True)
class FitLine:
    per_token_s: float
    per_spec_step_s: float = 0.0
    per_kv_token_s: float = 0.0
    base_s: float = 0.0
    per_request_s: float = 0.0  # each request in the batch
    per_extend_request_s: float = 0.0  # each request in a batch that computes prefill tokens


@dataclass(frozen=True)
class FitResult:
    lines: tuple[FitLine, ...]
    r2: float
    mape_pct: float
    under_share: float  # share of profile rows the fit predicts faster than measured
    max_under_pct: float  # worst under-prediction, % of the measured time
    num_points: int
    breakpoint_tokens: float | None = None  # where the second line starts (2-line fits)


def load_profile_csv(path: str | Path, time_column: str | None = None) -> ProfileData:
    """Read a profile CSV; ValueError naming what is wrong (missing columns, bad values).

    ``time_column`` picks another time column in milliseconds (e.g. ``time_ms_min`` from
    scripts/profile_sglang.py's repeats) instead of ``time_ms``/``time_s``."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        rows = list(reader)
    missing = [c for c in ("num_tokens",) if c not in columns]
    if time_column is not None:
        if time_column not in columns:
            missing.append(time_column)
    elif not columns & {"time_ms", "time_s"}:
        missing.append("time_ms or time_s")
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; have {', '.join(sorted(columns)) or 'none'}")
    if not rows:
        raise ValueError(f"{path}: no data rows")
    if time_column is not None:
        scale, time_col = (1.0 if time_column == "time_s" else 1e-3), time_column
    else:
        scale, time_col = (1e-3, "time_ms") if "time_ms" in columns else (1.0, "time_s")

    def column(name: str) -> np.ndarray:
        if name not in columns:
            return np.zeros(len(rows))
        try:
            return np.array([float(r[name]) for r in rows])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: column {name!r} has a non-numeric value") from None

    requests = column("num_requests") if "num_requests" in columns else None
    data = ProfileData(
        column("num_tokens"), column("spec_steps"), column("kv_read_tokens"), column(time_col) * scale, requests
    )
    if np.any(data.time_s <= 0) or np.any(data.num_tokens < 0):
        raise ValueError(f"{path}: times must be positive and num_tokens non-negative")
    if requests is not None and np.any(requests < 0):
        raise ValueError(f"{path}: num_requests must be non-negative")
    return data


def write_profile_csv(data: ProfileData, path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        head = ["num_tokens", "spec_steps", "kv_read_tokens", "time_ms"]
        w.writerow(head + (["num_requests"] if data.num_requests is not None else []))
        requests = data.num_requests if data.num_requests is not None else [None] * len(data)
        for row in zip(data.num_tokens, data.spec_steps, data.kv_read_tokens, data.time_s, requests):
            extra = [int(row[4])] if row[4] is not None else []
            w.writerow([int(row[0]), int(row[1]), int(row[2]), f"{row[3] * 1e3:.6f}"] + extra)


def profile_from_model(model: BatchTimeModel, num_tokens, spec_steps=(0,), kv_read_tokens=(0,)) -> ProfileData:
    """A synthetic profile: every combination of the given shapes, timed by ``model``."""
    grid = np.array([(n, s, k) for n in num_tokens for s in spec_steps for k in kv_read_tokens], dtype=float)
    times = np.array([model.batch_time_s(int(n), int(s), int(k)) for n, s, k in grid])
    return ProfileData(grid[:, 0], grid[:, 1], grid[:, 2], times)


def _design(data: ProfileData) -> tuple[np.ndarray, list[str]]:
    """Design matrix with only the columns the profile varies (others fit to 0)."""
    cols, names = [data.num_tokens], ["per_token_s"]
    for arr, name in ((data.spec_steps, "per_spec_step_s"), (data.kv_read_tokens, "per_kv_token_s")):
        if np.any(arr != arr[0]):
            cols.append(arr)
            names.append(name)
    cols.append(np.ones(len(data)))
    names.append("base_s")
    requests = data.num_requests
    if requests is not None:
        extend = extend_requests(data.num_tokens, requests)
        for arr, name in ((requests, "per_request_s"), (extend, "per_extend_request_s")):
            # only where it adds a direction (decode-only rows have as many requests as tokens)
            if np.linalg.matrix_rank(np.column_stack(cols + [arr])) > np.linalg.matrix_rank(np.column_stack(cols)):
                cols.append(arr)
                names.append(name)
    x = np.column_stack(cols)
    # a negative per-request coefficient is noise: held at 0 (its column dropped), the rest refitted
    _, kept = nonneg_lstsq(x, data.time_s, {i for i, n in enumerate(names) if n in REQUEST_TERMS})
    return x[:, kept], [names[i] for i in kept]


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def nonneg_lstsq(x: np.ndarray, y: np.ndarray, constrained) -> tuple[np.ndarray, list[int]]:
    """Least squares with the ``constrained`` columns' coefficients >= 0: while one comes out
    negative (timing noise), the most negative is held at 0 and the rest refitted. Returns every
    column's coefficient (0 for those held) and the columns kept, in order."""
    free = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while free:
        sol = _lstsq(x[:, free], y)
        neg = [j for j, col in enumerate(free) if col in constrained and sol[j] < 0]
        if not neg:
            coef[free] = sol
            break
        free.pop(min(neg, key=lambda j: sol[j]))
    return coef, free


def _predict(x: np.ndarray, coefs: list[np.ndarray]) -> np.ndarray:
    return np.max(np.column_stack([x @ c for c in coefs]), axis=1)


def _best_two_lines(x: np.ndarray, y: np.ndarray, n: np.ndarray, max_candidates: int) -> tuple[list, float]:
    """Search the breakpoint in num_tokens; each side least squares; score the max of both."""
    k = x.shape[1]
    values = np.unique(n)
    if values.size > max_candidates:
        values = np.unique(np.quantile(values, np.linspace(0, 1, max_candidates)))
    best: tuple[list, float, float] = ([], np.inf, np.nan)
    for bp in values:
        low, high = n < bp, n >= bp
        if low.sum() < k or high.sum() < k:
            continue
        coefs = [_lstsq(x[low], y[low]), _lstsq(x[high], y[high])]
        sse = float(np.sum((_predict(x, coefs) - y) ** 2))
        if sse < best[1]:
            best = (coefs, sse, float(bp))
    if not best[0]:
        raise ValueError(f"two lines need at least {2 * k} points over at least two num_tokens values")
    # the max of two split fits can extrapolate badly (one side's line dominating the other
    # side's rows); one line twice is also a two-line form, so never do worse than it
    one = _lstsq(x, y)
    one_sse = float(np.sum((x @ one - y) ** 2))
    if one_sse < best[1]:
        best = ([one, one.copy()], one_sse, best[2])
    coefs, sse, bp = best
    for _ in range(5):  # reassign each point to the line that attains the max, refit
        owner = np.argmax(np.column_stack([x @ c for c in coefs]), axis=1)
        if min(np.sum(owner == i) for i in range(2)) < k:
            break
        new = [_lstsq(x[owner == i], y[owner == i]) for i in range(2)]
        new_sse = float(np.sum((_predict(x, new) - y) ** 2))
        if new_sse >= sse * (1 - 1e-12):
            break
        coefs, sse = new, new_sse
    return coefs, bp


def fit_lines(data: ProfileData, num_lines: int = 2, max_candidates: int = 256) -> FitResult:
    """Least-squares fit of the max-of-lines form with 1 or 2 lines."""
    if num_lines not in (1, 2):
        raise ValueError(f"num_lines must be 1 or 2, got {num_lines}")
    x, names = _design(data)
    if len(data) < x.shape[1]:
        raise ValueError(f"need at least {x.shape[1]} profile rows, got {len(data)}")
    y = data.time_s
    if num_lines == 1:
        coefs, bp = [_lstsq(x, y)], None
    else:
        coefs, bp = _best_two_lines(x, y, data.num_tokens, max_candidates)
    lines = tuple(FitLine(**{name: float(c[i]) for i, name in enumerate(names)}) for c in coefs)
    return _with_stats(lines, data, bp)


def _with_stats(lines: tuple[FitLine, ...], data: ProfileData, bp: float | None) -> FitResult:
    pred = FittedLinesModel("fit", lines).predict(data)
    y = data.time_s
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((pred - y) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    rel = (pred - y) / y
    # float noise on an exact fit is not an under-prediction
    return FitResult(
        lines,
        r2,
        float(np.mean(np.abs(rel)) * 100),
        float(np.mean(rel < -1e-9)),
        float(max(0.0, -rel.min()) * 100),
        len(data),
        bp,
    )


def subset(data: ProfileData, idx: np.ndarray) -> ProfileData:
    """The rows ``idx`` of ``data``."""
    requests = data.num_requests[idx] if data.num_requests is not None else None
    return ProfileData(data.num_tokens[idx], data.spec_steps[idx], data.kv_read_tokens[idx], data.time_s[idx], requests)


def holdout_split(num_rows: int, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: a seeded permutation, the first ``round(frac * n)`` rows
    (at least one when ``frac`` > 0) held out; both sorted. Same arguments, same split."""
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {frac}")
    perm = np.random.default_rng(seed).permutation(num_rows)
    k = max(1, round(frac * num_rows)) if frac > 0 else 0
    if k >= num_rows:
        raise ValueError(f"holding out {k} of {num_rows} rows leaves none to fit")
    return np.sort(perm[k:]), np.sort(perm[:k])


def score(fit: FitResult, data: ProfileData) -> FitResult:
    """The same lines with their statistics computed on ``data`` (e.g. held-out rows)."""
    return _with_stats(fit.lines, data, fit.breakpoint_tokens)


def fit_problems(fit: FitResult, max_mape_pct: float | None = None, mape_pct: float | None = None) -> list[str]:
    """Why ``fit`` should not be trusted (empty when it can be): a negative per-token,
    per-draft-step, per-KV-token or per-request coefficient, a zero-shape step time that is not positive,
    or a MAPE (``mape_pct``, default the fit's own) above ``max_mape_pct``."""
    problems = []
    for i, line in enumerate(fit.lines):
        for field in ("per_token_s", "per_spec_step_s", "per_kv_token_s", *REQUEST_TERMS):
            value = getattr(line, field)
            if value < 0:
                problems.append(f"line {i} has a negative {field} ({value:.3e})")
    if max(l.base_s for l in fit.lines) <= 0:
        problems.append("the empty step's time (max of the intercepts) is not positive")
    mape = fit.mape_pct if mape_pct is None else mape_pct
    if max_mape_pct is not None and not mape <= max_mape_pct:
        problems.append(f"MAPE {mape:.1f}% is above {max_mape_pct:g}%")
    return problems


def inflate(fit: FitResult, data: ProfileData, max_under_share: float) -> FitResult:
    """Scale every coefficient so that at most ``max_under_share`` of the rows are under-predicted."""
    if not 0.0 <= max_under_share < 1.0:
        raise ValueError(f"max_under_share must be in [0, 1), got {max_under_share}")
    ratio = data.time_s / FittedLinesModel("fit", fit.lines).predict(data)
    factor = max(1.0, float(np.quantile(ratio, 1.0 - max_under_share, method="higher")))
    lines = tuple(FitLine(*(v * factor for v in asdict(l).values())) for l in fit.lines)
    return _with_stats(lines, data, fit.breakpoint_tokens)


class FittedLinesModel(BatchTimeModel):
    """Max-of-lines model with optional KV-read and per-request terms per line and a closed-form inverse."""

    def __init__(self, name: str, lines: tuple[FitLine, ...]) -> None:
        if not lines:
            raise ValueError("need at least one line")
        self.name = name
        self.lines = tuple(lines)

    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        extend = num_tokens > num_requests > 0
        return max(
            l.per_token_s * num_tokens + self._intercept(l, spec_steps, kv_read_tokens, num_requests, extend)
            for l in self.lines
        )

    @staticmethod
    def _intercept(l: FitLine, spec_steps, kv_read_tokens, num_requests, extend: bool):
        # one expression for the time and its inverse, so that both round alike
        b = (
            l.base_s
            + l.per_spec_step_s * spec_steps
            + l.per_kv_token_s * kv_read_tokens
            + l.per_request_s * num_requests
        )
        return b + l.per_extend_request_s * num_requests if extend else b

    def _line_limit(self, l: FitLine, time_s: float, spec_steps: int, kv_read_tokens: int, num_requests: int) -> int:
        """One line's inverse. With ``per_extend_request_s`` it prices an extend batch whatever
        the count: the tokens a caller asks room for are the ones that carry prefill, and a
        batch of ``R`` requests whose last one is a 1-token chunk has ``R`` tokens, which
        ``batch_time_s`` cannot tell from ``R`` decodes (an exact inverse handed out such chunks,
        one token a step, live). So ``batch_time_s(n) <= time_s`` for the answer ``n``, and past
        ``num_requests`` tokens nothing more fits."""
        extend = l.per_extend_request_s > 0 and num_requests > 0
        intercept = self._intercept(l, spec_steps, kv_read_tokens, num_requests, extend)
        return line_limit(l.per_token_s, intercept, time_s)

    def max_tokens_within_s(
        self, time_s: float, spec_steps: int = 0, kv_read_tokens: int = 0, num_requests: int = 0
    ) -> int:
        return min(self._line_limit(l, time_s, spec_steps, kv_read_tokens, num_requests) for l in self.lines)

    def predict(self, data: ProfileData) -> np.ndarray:
        requests = data.num_requests if data.num_requests is not None else np.zeros(len(data))
        extend = extend_requests(data.num_tokens, requests)
        cols = [
            l.per_token_s * data.num_tokens
            + l.per_spec_step_s * data.spec_steps
            + l.per_kv_token_s * data.kv_read_tokens
            + l.base_s
            + l.per_request_s * requests
            + l.per_extend_request_s * extend
            for l in self.lines
        ]
        return np.max(np.column_stack(cols), axis=1)

    def __repr__(self) -> str:
        return f"FittedLinesModel({self.name!r}, {self.lines})"


def save_fit_json(fit: FitResult, path: str | Path, name: str, source: str = "") -> None:
    doc = {
        "format": JSON_FORMAT,
        "name": name,
        "source": source,
        "lines": [asdict(l) for l in fit.lines],
        "fit": {k: v for k, v in asdict(fit).items() if k != "lines"},
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def model_from_json_doc(doc: dict, origin: str = "") -> FittedLinesModel:
    """A FittedLinesModel from a parsed ``save_fit_json`` document; ValueError when malformed."""
    if doc.get("format") != JSON_FORMAT:
        raise ValueError(f"{origin}: not a {JSON_FORMAT} document (format={doc.get('format')!r})")
    try:
        lines = tuple(FitLine(**{k: float(v) for k, v in l.items()}) for l in doc["lines"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{origin}: bad 'lines' entry: {exc}") from None
    return FittedLinesModel(str(doc.get("name") or Path(origin).stem), lines)
