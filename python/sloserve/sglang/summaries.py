"""Replica plan summaries shared between SGLang's scheduler processes and its DP controller.

SGLang's own load snapshots say how busy a rank is; the sloserve routers also want each
replica's plan summary (admitted requests by tier, slack). Scheduler rank 0 of each DP replica
writes its ``ReplicaSummary`` as JSON into a directory the launcher creates; the controller
reads the latest ones. Writes are atomic renames, so a reader never sees half a file.
``SnapshotReplicaView`` is how a router sees such a summary, in the DP controller (one host)
and in the Ray ingress (``ray_ingress.py``, replicas on several nodes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from sloserve.core.plan import AdmitDecision, AdmitReason, ReplicaSummary
from sloserve.core.request import Request

ENV_SUMMARY_DIR = "SLOSERVE_SGLANG_SUMMARY_DIR"


class PlanTimer:
    """The plugin's own CPU time per SGLang iteration (observe + plan), the last ``window``
    iterations kept in a ring: what the plugin adds to every scheduler step."""

    def __init__(self, window: int = 4096) -> None:
        self._ring_s = np.zeros(window)
        self.count = 0
        self.total_s = 0.0

    def add(self, seconds: float) -> None:
        self._ring_s[self.count % self._ring_s.size] = seconds
        self.count += 1
        self.total_s += seconds

    def stats(self) -> dict:
        recent = self._ring_s[: min(self.count, self._ring_s.size)]
        if not recent.size:
            return {"iterations": 0}
        p50, p99 = np.percentile(recent, [50, 99])
        return {
            "iterations": self.count,
            "total_s": self.total_s,
            "mean_ms": self.total_s / self.count * 1e3,
            "p50_ms": float(p50) * 1e3,
            "p99_ms": float(p99) * 1e3,
        }


def stats_path(directory: str | os.PathLike, replica_id: int) -> Path:
    return Path(directory) / f"replica-{int(replica_id)}.stats.json"


def write_stats(directory: str | os.PathLike, replica_id: int, stats: dict) -> None:
    path = stats_path(directory, replica_id)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(stats, sort_keys=True))
    os.replace(tmp, path)


def summary_path(directory: str | os.PathLike, replica_id: int) -> Path:
    return Path(directory) / f"replica-{int(replica_id)}.json"


def write_summary(directory: str | os.PathLike, summary: ReplicaSummary) -> None:
    path = summary_path(directory, summary.replica_id)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = dataclasses.asdict(summary)
    data["admitted_by_tier"] = dict(summary.admitted_by_tier)
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_stats(directory: str | os.PathLike | None) -> dict[int, dict]:
    """The latest ``write_stats`` record per replica id; unreadable files are skipped."""
    out: dict[int, dict] = {}
    if not directory or not Path(directory).is_dir():
        return out
    for path in sorted(Path(directory).glob("replica-*.stats.json")):
        try:
            out[int(path.name.split("-")[1].split(".")[0])] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def read_summaries(directory: str | os.PathLike | None) -> dict[int, ReplicaSummary]:
    """The latest summary per replica id; unreadable or malformed files are skipped."""
    out: dict[int, ReplicaSummary] = {}
    if not directory or not Path(directory).is_dir():
        return out
    for path in sorted(Path(directory).glob("replica-[0-9]*.json")):
        if path.name.endswith(".stats.json"):
            continue
        try:
            data = json.loads(path.read_text())
            summary = ReplicaSummary(**data)
        except (OSError, ValueError, TypeError):
            continue
        out[summary.replica_id] = summary
    return out


@dataclasses.dataclass
class SnapshotReplicaView:
    """A ReplicaView over a published summary: admission is judged from KV headroom alone."""

    replica_id: int
    published: ReplicaSummary

    def summary(self) -> ReplicaSummary:
        return self.published

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        need = request.prompt_tokens + request.planning_output_tokens
        s = self.published
        if not s.healthy:
            return AdmitDecision(AdmitReason.REJECTED, detail="unhealthy")
        if s.kv_capacity_tokens and need > s.free_kv_tokens:
            return AdmitDecision(AdmitReason.NO_KV, detail=f"needs {need} KV tokens, {s.free_kv_tokens} free")
        return AdmitDecision(AdmitReason.ADMITTED, slack_s=s.slack_s)
