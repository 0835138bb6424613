"""Registered scheduling policies (imported by the policy registry on first lookup)."""

import importlib
import pkgutil

# Every module in this package registers its policies on import; adding a policy is one file.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
