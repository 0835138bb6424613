#!/usr/bin/env bash
# Install SGLang on a CPU-only machine: its classes for test/sglang, and its real server in CPU
# mode (python -m sloserve.launch_server --backend sglang --device cpu; docs/sglang.md).
#
# SGLang's CPU kernels (sgl_kernel) are not on PyPI, but on a CPU without AMX every layer takes
# SGLang's torch-native path, so the server runs with sloserve's import shim (triton/torchvision
# stubs, an sgl_kernel placeholder; sloserve/sglang/cpu_shim). This installs, and never the CUDA
# torch or nvidia-* wheels:
#   * torch==2.13.0+cpu (the local CPU wheel; the PyTorch CPU index as a fallback),
#   * sglang with --no-deps,
#   * the light packages SGLang's scheduler modules import (found by trial, pinned where SGLang
#     pins them), each with --no-deps unless its own dependencies are light too.
# GPU-only imports (triton, torchvision) are stubbed inside the test process instead
# (sloserve/sglang/gpu_stubs.py). Idempotent: returns in about a second when all is in place.
#
# Usage: scripts/install_sglang_cpu.sh            (SGLANG_VERSION=0.5.16 to test the old one)
set -euo pipefail

PY="${PYTHON:-python}"
SGLANG_VERSION="${SGLANG_VERSION:-0.5.23}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Light dependencies, with --no-deps (their own requirements are either below or heavy/unused).
NO_DEPS_PKGS=(
  "apache-tvm-ffi==0.1.11" "compressed-tensors==0.18.0" "sentencepiece==0.2.1"
  msgspec psutil pybase64 setproctitle dill loguru gguf partial_json_parser einops ipython traitlets
  "xgrammar==0.2.7"  # the HTTP server's grammar backend; its own deps would pull triton
)
# Light dependencies whose own requirements are light (no torch among them).
WITH_DEPS_PKGS=("transformers==5.19.0" "tokenizers==0.23.2" huggingface_hub requests pyzmq orjson
  jsonschema python-multipart soundfile  # SGLang's HTTP server (CPU mode)
  datasets)  # imported by SGLang's own benchmark client (sglang.benchmark.serving)

check() {
  SLOSERVE_SGLANG_CHECK_VERSION="$SGLANG_VERSION" SLOSERVE_TORCH_CHECK_VERSION="$TORCH_VERSION" \
    "$PY" - <<'PYEOF'
import importlib.metadata as md, os, sys
want_sglang = os.environ["SLOSERVE_SGLANG_CHECK_VERSION"]
want_torch = os.environ["SLOSERVE_TORCH_CHECK_VERSION"]
try:
    if md.version("sglang") != want_sglang or not md.version("torch").startswith(want_torch):
        sys.exit(1)
except md.PackageNotFoundError:
    sys.exit(1)
from sloserve.sglang import gpu_stubs
gpu_stubs.install()
import torch
if torch.version.cuda is not None:
    print("error: a CUDA torch is installed; test/sglang expects the CPU build", file=sys.stderr)
    sys.exit(3)
import sglang.srt.managers.scheduler, sglang.srt.managers.data_parallel_controller  # noqa: E401,F401
PYEOF
}

# Fast path: versions and distributions only (importing SGLang takes many seconds).
quick_check() {
  "$PY" - "$SGLANG_VERSION" "$TORCH_VERSION" "${NO_DEPS_PKGS[@]}" "${WITH_DEPS_PKGS[@]}" <<'PYEOF'
import importlib.metadata as md, sys
sglang, torch, *pkgs = sys.argv[1:]
try:
    ok = md.version("sglang") == sglang and md.version("torch") == torch + "+cpu"
    for spec in pkgs:
        name, _, version = spec.partition("==")
        installed = md.version(name)  # raises when missing, pinned or not
        ok = ok and (not version or installed == version)
except md.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
}

if quick_check; then
  echo "sglang ${SGLANG_VERSION} (CPU scheduler stack) already installed"
  exit 0
fi

export PIP_ROOT_USER_ACTION=ignore
# --no-warn-conflicts: sglang's GPU requirements are left out on purpose (README, "CPU SGLang"),
# so pip's resolver would print ~50 "requires X, which is not installed" lines on every install.
PIP=("$PY" -m pip install --disable-pip-version-check --no-warn-conflicts -q)
if ! "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" --no-deps; then
  "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" --no-deps --index-url https://download.pytorch.org/whl/cpu
fi
"${PIP[@]}" filelock fsspec jinja2 networkx sympy typing-extensions setuptools
"${PIP[@]}" --no-deps "sglang==${SGLANG_VERSION}"
"${PIP[@]}" --no-deps "${NO_DEPS_PKGS[@]}"
"${PIP[@]}" "${WITH_DEPS_PKGS[@]}"

if ! check; then
  echo "error: SGLang ${SGLANG_VERSION} still does not import on CPU (see the traceback above)" >&2
  exit 1
fi
echo "installed sglang ${SGLANG_VERSION} (CPU scheduler stack)"
