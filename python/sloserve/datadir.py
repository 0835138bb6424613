"""Where the public data files live (traces, length CSVs, GPU profiles).

They are never part of the project. ``SLOSERVE_DATA_DIR`` wins; otherwise ``shared/data``
beside the checkout (``<checkout>/../shared/data``) or inside it, when present.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SLOSERVE_DATA_DIR"


def data_dir() -> Path | None:
    """The data directory, or None when none is configured or found."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (parent / "shared" / "data", parent.parent / "shared" / "data"):
            if candidate.is_dir():
                return candidate
    return None


def data_file(*parts: str) -> Path:
    """A file under the data directory; FileNotFoundError with a hint when it is missing."""
    root = data_dir()
    if root is None:
        raise FileNotFoundError(f"no data directory found; set {ENV_VAR} to a folder holding {'/'.join(parts)}")
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (data directory from {ENV_VAR} or ../shared/data)")
    return path


def resolve_data_path(path: str | None) -> str | None:
    """``path`` as given when it exists; else the same relative name under the data directory
    or one of its folders (``traces/``, ``profiles/``...), so ``--trace
    AzureLLMInferenceTrace_conv.csv`` works from any directory. Unchanged when found nowhere:
    the loader then reports the missing file."""
    if path is None or Path(path).exists() or Path(path).is_absolute():
        return path
    root = data_dir()
    if root is None or not root.is_dir():
        return path
    for candidate in (root / path, *(sub / path for sub in sorted(root.iterdir()) if sub.is_dir())):
        if candidate.is_file():
            return str(candidate)
    return path
