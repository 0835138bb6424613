"""Loaded at start-up by every Python process of a ``--device cpu`` SGLang server.

The sloserve launcher puts this directory first on ``PYTHONPATH`` in CPU mode only, so the
processes SGLang spawns (scheduler, detokenizer, DP controller) import SGLang as the launcher's
own process does: ``triton`` and ``torchvision`` resolve to import stubs, and ``sgl_kernel``
to the placeholder beside this file. A GPU run never has this directory on its path.
"""

from sloserve.sglang.gpu_stubs import install as _install_gpu_stubs

_install_gpu_stubs()
