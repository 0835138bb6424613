"""sloserve on SGLang: the plugin, scheduler/DP-controller subclasses and the launcher.

The ONLY sloserve package that imports sglang/torch, and only in the submodules that need it:
``config``, ``translate``, ``shadow``, ``summaries``, ``spec_choice`` and ``launch`` import
neither, so ``sloserve.sglang.launch.sglang_backend_available()`` works without SGLang.
"""
