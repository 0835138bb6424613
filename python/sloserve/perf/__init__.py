"""Batch-time models: the paper's max-of-lines form, a roofline form, fitting, presets."""

from sloserve.perf.base import BatchTimeModel, plan_shape
from sloserve.perf.paper import PAPER_PRESETS, Line, PaperLinesModel
from sloserve.perf.presets import get_model, preset_names

__all__ = ["BatchTimeModel", "Line", "PAPER_PRESETS", "PaperLinesModel", "get_model", "plan_shape", "preset_names"]
