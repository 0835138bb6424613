"""Preset lookup by name: paper-form presets here; roofline presets are added by perf.roofline."""

from __future__ import annotations

from sloserve.perf.base import BatchTimeModel
from sloserve.perf.paper import PAPER_PRESETS, PaperLinesModel


def _roofline_presets() -> dict:
    try:
        from sloserve.perf.roofline import ROOFLINE_PRESETS  # noqa: PLC0415 (optional module)
    except ImportError:
        return {}
    return ROOFLINE_PRESETS


def preset_names() -> list[str]:
    return sorted(set(PAPER_PRESETS) | set(_roofline_presets()))


def get_model(name: str) -> BatchTimeModel:
    """The batch-time model for a preset name; KeyError with the choices otherwise."""
    if name in PAPER_PRESETS:
        return PaperLinesModel(name, PAPER_PRESETS[name])
    roof = _roofline_presets()
    if name in roof:
        return roof[name]()
    raise KeyError(f"unknown model preset {name!r}; choose from: {', '.join(preset_names())}")
