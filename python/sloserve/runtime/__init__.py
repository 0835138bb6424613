"""The embedded serving runtime: an SGLang-compatible HTTP front, a ZMQ router process and
scheduler processes driving any registered policy against a simulated GPU (docs/runtime.md).

Entry point: ``python -m sloserve.launch_server`` (``sloserve.runtime.server.serve(ServerConfig)``).
``slo_params.parse_slo`` is the one interpretation of the ``custom_params`` SLO keys
(docs/slo-api.md); it imports only the core, so other backends can share it.
"""
