"""Discrete-event simulator, simulated engine, cluster, capacity search."""

from sloserve.sim.config import SimConfig
from sloserve.sim.engine import SimulatedEngine
from sloserve.sim.simulator import SimResult, Simulator, simulate

__all__ = ["SimConfig", "SimResult", "SimulatedEngine", "Simulator", "simulate"]
