"""Workloads: scenarios, SLO presets, arrival processes, trace and length loaders.

Entry point: ``build_workload(WorkloadConfig(...)) -> Workload``. See docs/workloads.md.
"""

from sloserve.workloads.arrivals import ARRIVAL_KINDS, arrival_times_s, interarrival_cv, scale_to_rate
from sloserve.workloads.build import Workload, WorkloadConfig, build_workload
from sloserve.workloads.lengths import BUILTIN as LENGTH_MODELS
from sloserve.workloads.lengths import LengthDist, PairLengthModel, fit_pair_model, get_length_model
from sloserve.workloads.loaders import AzureTrace, LengthTable, load_azure_trace, load_lengths_csv
from sloserve.workloads.scenarios import SCENARIOS, Scenario, get_scenario
from sloserve.workloads.slo_presets import SLO_PRESETS, SloPreset, get_slo_preset

__all__ = [
    "ARRIVAL_KINDS",
    "AzureTrace",
    "LENGTH_MODELS",
    "LengthDist",
    "LengthTable",
    "PairLengthModel",
    "SCENARIOS",
    "SLO_PRESETS",
    "Scenario",
    "SloPreset",
    "Workload",
    "WorkloadConfig",
    "arrival_times_s",
    "build_workload",
    "fit_pair_model",
    "get_length_model",
    "get_scenario",
    "get_slo_preset",
    "interarrival_cv",
    "load_azure_trace",
    "load_lengths_csv",
    "scale_to_rate",
]
