"""Suite-wide pytest hooks."""

from __future__ import annotations

import os
import sys

_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config):
    # torch 2.13 (CPU) plus SGLang's modules, imported by test/sglang, crash in native code while
    # the interpreter tears down their extension modules, after every test has run and the
    # summary has been printed ("Segmentation fault", no Python frame). That turns a green run
    # into exit code 139. Once pytest has reported, leave without that teardown, keeping
    # pytest's own exit status. Runs without torch loaded exit normally.
    if "torch" in sys.modules and _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
