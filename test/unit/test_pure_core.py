"""The pure core imports without torch, sglang, zmq, fastapi (principle 2)."""

from __future__ import annotations

import json
import subprocess
import sys

PURE = ["core", "perf", "planner", "policies", "spec", "routing", "sim", "workloads", "metrics"]
FORBIDDEN = ["torch", "sglang", "zmq", "fastapi", "uvicorn", "aiohttp", "matplotlib", "tqdm"]


def test_pure_core_imports_no_heavy_module():
    code = f"""
import importlib, json, pkgutil, sys
import sloserve
names = []
for pkg in {PURE!r}:
    mod = importlib.import_module("sloserve." + pkg)
    names.append(mod.__name__)
    for info in pkgutil.walk_packages(mod.__path__, mod.__name__ + "."):
        if info.name.endswith("__main__") or info.name.endswith(".cli"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({{"names": names, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(data["names"]) >= len(PURE)
    assert data["loaded"] == []
