"""Stand-ins for GPU-only packages (triton, torchvision) so SGLang imports on a CPU machine.

Installed only where SGLang runs without a GPU: in the CPU server's processes (through
``cpu_shim/sitecustomize.py``, which the launcher puts on their path in ``--device cpu`` mode
only), in the test process (test/sglang/conftest.py) and in the install check. No sglang import.

SGLang imports these at module level for kernels that never run on the scheduler's CPU-side
code paths we test; the stubs accept decoration and attribute access. ``@triton.jit`` leaves the
plain Python function, so launching a kernel (``kernel[grid](...)``) raises a TypeError, and the
GPU driver probe (``triton.runtime.driver.active``) raises as on a machine without a GPU.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

STUBBED_ROOTS = ("triton", "torchvision")
_FAKE_VERSION = {"triton": "3.5.0", "torchvision": "0.28.0"}
# Real triton raises here on a machine without a GPU driver; SGLang probes it and falls back.
_NO_DRIVER = ("triton.runtime.driver.active",)


class _Anything:
    """Permissive placeholder: attribute access, indexing and decoration all succeed."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]  # used as a bare decorator: keep the Python function
        return _Anything(f"{self._name}()")

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        name = f"{self._name}.{attr}"
        if name in _NO_DRIVER:
            raise RuntimeError(f"{name}: no GPU driver (CPU test stub)")
        if attr[:1].isupper():
            return _stub_class(name)
        return _Anything(name)

    def __getitem__(self, key):
        return self

    def __mro_entries__(self, bases):
        return (object,)  # allow `class X(triton.Something)` at import time

    def __repr__(self) -> str:
        return f"<gpu stub {self._name}>"


class _StubMeta(type):
    """Class-level attribute access (enum members such as InterpolationMode.NEAREST) succeeds."""

    def __getattr__(cls, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Anything(f"{cls.__module__}.{cls.__name__}.{attr}")


def _stub_class(qualname: str) -> type:
    """CamelCase names are classes upstream; torch uses some in isinstance checks."""

    def __init__(self, *args, **kwargs) -> None:
        self._stub_args = (args, kwargs)

    module, name = qualname.rsplit(".", 1)
    return _StubMeta(name, (), {"__init__": __init__, "__module__": module})


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        value = _stub_class(f"{self.__name__}.{attr}") if attr[:1].isupper() else _Anything(f"{self.__name__}.{attr}")
        setattr(self, attr, value)  # stable identity: the same name returns the same object
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package: submodules resolve through the finder too
        root = spec.name.split(".")[0]
        module.__version__ = _FAKE_VERSION.get(root, "0.0.0")
        return module

    def exec_module(self, module) -> None:
        return None


class _StubFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in STUBBED_ROOTS:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def really_installed(root: str) -> bool:
    """Whether ``root`` is importable without these stubs (another finder resolves it)."""
    for finder in sys.meta_path:
        if isinstance(finder, _StubFinder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is not None and find(root, None) is not None:
            return True
    return False


def install() -> list[str]:
    """Stub every GPU-only root that is not really installed; returns the stubbed roots."""
    if any(isinstance(f, _StubFinder) for f in sys.meta_path):
        return [r for r in STUBBED_ROOTS if isinstance(sys.modules.get(r), _StubModule)]
    missing = [r for r in STUBBED_ROOTS if r not in sys.modules and not really_installed(r)]
    if missing:
        finder = _StubFinder()
        sys.meta_path.insert(0, _RootFilter(finder, tuple(missing)))
    return missing


class _RootFilter(_StubFinder):
    """The finder, limited to the roots that were missing (never shadow a real package)."""

    def __init__(self, inner: _StubFinder, roots: tuple[str, ...]) -> None:
        self._inner = inner
        self._roots = roots

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self._roots:
            return None
        return self._inner.find_spec(fullname, path, target)
