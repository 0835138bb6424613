"""Batch-time models: the paper's max-of-lines form, a roofline form, fitting, presets."""

from sloserve.perf.base import BatchTimeModel, plan_shape
from sloserve.perf.fit import FitLine, FitResult, FittedLinesModel, fit_lines, load_profile_csv
from sloserve.perf.hardware import GPUS, MODELS, GpuSpec, ModelArch
from sloserve.perf.paper import PAPER_PRESETS, Line, PaperLinesModel
from sloserve.perf.presets import get_model, load_model_json, preset_names
from sloserve.perf.roofline import ROOFLINE_PRESETS, RooflineConfig, RooflineModel, roofline

__all__ = [
    "BatchTimeModel",
    "FitLine",
    "FitResult",
    "FittedLinesModel",
    "GPUS",
    "GpuSpec",
    "Line",
    "MODELS",
    "ModelArch",
    "PAPER_PRESETS",
    "PaperLinesModel",
    "ROOFLINE_PRESETS",
    "RooflineConfig",
    "RooflineModel",
    "fit_lines",
    "get_model",
    "load_model_json",
    "load_profile_csv",
    "plan_shape",
    "preset_names",
    "roofline",
]
