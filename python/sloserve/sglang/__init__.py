"""sloserve on SGLang: the plugin, scheduler/DP-controller subclasses and the launcher.

The ONLY sloserve package that imports sglang/torch, and only in the submodules that need it:
``config``, ``translate``, ``shadow``, ``summaries``, ``spec_choice``, ``launch``, ``cpu_mode``,
``process``, ``gpu_stubs`` and the Ray pieces (``ray_*``: replica actors, the ingress) import
neither, so the launcher works before SGLang is imported
(``tiny_model`` imports torch and transformers, not sglang). ``cpu_shim/`` is a directory put on
the CPU server's ``PYTHONPATH`` (docs/sglang.md, "CPU mode"), not a package.
"""
