"""SLOs-Serve: batch planner, DP admission and the ``slos-serve`` policy (registered on import)."""

from sloserve.planner.admission import Admission, Item, admit, check
from sloserve.planner.batch import DecodeLoad, Forecast, StepGrid, batches, forecast, make_grid
from sloserve.planner.config import SLOsServeConfig
from sloserve.planner.policy import SLOsServeScheduler

__all__ = [
    "Admission",
    "DecodeLoad",
    "Forecast",
    "Item",
    "SLOsServeConfig",
    "SLOsServeScheduler",
    "StepGrid",
    "admit",
    "batches",
    "check",
    "forecast",
    "make_grid",
]
