#!/usr/bin/env bash
# Installs sloserve with its test dependencies, plus a CPU-only SGLang for the adapter tests
# (never the CUDA wheels). Idempotent: fast when everything is already installed.
# Output: a few lines. The CPU SGLang install leaves out sglang's GPU requirements on purpose,
# so pip's resolver warnings are switched off and one line says what is left out instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --no-warn-conflicts -e '.[test,ray,gateway]'
echo "installed sloserve (editable) with its test, ray and gateway extras"
if [ -f scripts/install_sglang_cpu.sh ]; then
  bash scripts/install_sglang_cpu.sh
  python - <<'PYEOF'
import importlib.metadata as md

from packaging.requirements import Requirement

missing = []
for text in md.requires("sglang") or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an optional extra, or another platform's requirement
    try:
        md.version(req.name)
    except md.PackageNotFoundError:
        missing.append(req.name)
print(f"note: {len(missing)} of sglang's requirements are deliberately not installed (GPU kernels, CUDA "
      f"libraries, serving extras: {', '.join(sorted(missing)[:4])}, ...); `pip check` lists them; "
      "README.md, 'CPU SGLang', says why")
PYEOF
fi
