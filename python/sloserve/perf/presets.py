"""Preset lookup: paper-form presets, roofline presets, and JSON model files.

``get_model`` accepts a preset name or a path ending in ``.json``: either a fitted max-of-lines
model written by ``scripts/fit_perf_model.py`` (format ``sloserve-perf-lines/1``) or a roofline
description (format ``sloserve-roofline/1``: model, gpu, tp, optional draft and RooflineConfig
overrides such as step_overhead_s).
"""

from __future__ import annotations

import json
from pathlib import Path

from sloserve.perf.base import BatchTimeModel
from sloserve.perf.paper import PAPER_PRESETS, PaperLinesModel

ROOFLINE_JSON_FORMAT = "sloserve-roofline/1"


def _roofline_presets() -> dict:
    try:
        from sloserve.perf.roofline import ROOFLINE_PRESETS  # noqa: PLC0415 (optional module)
    except ImportError:
        return {}
    return ROOFLINE_PRESETS


def preset_names() -> list[str]:
    return sorted(set(PAPER_PRESETS) | set(_roofline_presets()))


def load_model_json(path: str | Path) -> BatchTimeModel:
    """A model from a JSON file; FileNotFoundError or ValueError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if doc.get("format") == ROOFLINE_JSON_FORMAT:
        from sloserve.perf.roofline import roofline  # noqa: PLC0415

        fields = {k: v for k, v in doc.items() if k not in ("format", "name", "model", "gpu", "tp", "draft")}
        try:
            return roofline(
                doc["model"],
                doc["gpu"],
                int(doc.get("tp", 1)),
                doc.get("draft"),
                name=str(doc.get("name") or path.stem),
                **fields,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: bad roofline description: {exc}") from None
    from sloserve.perf.fit import model_from_json_doc  # noqa: PLC0415

    return model_from_json_doc(doc, str(path))


def get_model(name: str) -> BatchTimeModel:
    """The batch-time model for a preset name or a ``.json`` file; KeyError with the choices otherwise."""
    if name in PAPER_PRESETS:
        return PaperLinesModel(name, PAPER_PRESETS[name])
    roof = _roofline_presets()
    if name in roof:
        return roof[name]()
    if str(name).endswith(".json"):
        return load_model_json(name)
    raise KeyError(f"unknown model preset {name!r}; choose from: {', '.join(preset_names())} (or a .json file)")
