"""sloserve: SLO-aware LLM serving (SLOs-Serve re-implemented on SGLang)."""

__version__ = "0.1.0"
