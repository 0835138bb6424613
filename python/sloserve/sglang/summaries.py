"""Replica plan summaries shared between SGLang's scheduler processes and its DP controller.

SGLang's own load snapshots say how busy a rank is; the sloserve routers also want each
replica's plan summary (admitted requests by tier, slack). Scheduler rank 0 of each DP replica
writes its ``ReplicaSummary`` as JSON into a directory the launcher creates; the controller
reads the latest ones. Writes are atomic renames, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from sloserve.core.plan import ReplicaSummary

ENV_SUMMARY_DIR = "SLOSERVE_SGLANG_SUMMARY_DIR"


def summary_path(directory: str | os.PathLike, replica_id: int) -> Path:
    return Path(directory) / f"replica-{int(replica_id)}.json"


def write_summary(directory: str | os.PathLike, summary: ReplicaSummary) -> None:
    path = summary_path(directory, summary.replica_id)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = dataclasses.asdict(summary)
    data["admitted_by_tier"] = dict(summary.admitted_by_tier)
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_summaries(directory: str | os.PathLike | None) -> dict[int, ReplicaSummary]:
    """The latest summary per replica id; unreadable or malformed files are skipped."""
    out: dict[int, ReplicaSummary] = {}
    if not directory or not Path(directory).is_dir():
        return out
    for path in sorted(Path(directory).glob("replica-*.json")):
        try:
            data = json.loads(path.read_text())
            summary = ReplicaSummary(**data)
        except (OSError, ValueError, TypeError):
            continue
        out[summary.replica_id] = summary
    return out
