"""What the front knows about each child process, and how often it may restart them.

Policy (docs/runtime.md, "Reliability"): a scheduler or router process that exits, or a
scheduler that sends nothing for ``--watchdog-timeout`` seconds (hung: it is killed), is
restarted; the requests it held fail with 503 and no other request is lost. More than
``--max-restarts`` restarts within ``RESTART_WINDOW_S`` means something is badly wrong: the
server then fails fast (exit code 1) so that a supervisor can restart it whole.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RESTART_WINDOW_S = 60.0


@dataclass
class ProcHealth:
    """One child process as /health reports it."""

    state: str = "up"  # up | restarting
    exit_code: int | None = None
    restarts: int = 0
    last_heard_s: float = 0.0  # server time base: last message from it
    reason: str = ""  # why it was last restarted
    node: str = ""  # where it runs (the Ray node id; empty on one host)

    def report(self, name: str, index: int | None = None) -> dict:
        out: dict = {} if index is None else {"replica": index}
        out.update(
            {"up": self.state == "up", "state": self.state, "exit_code": self.exit_code, "restarts": self.restarts}
        )
        if self.reason:
            out["last_failure"] = self.reason
        if self.node:
            out["node"] = self.node
        return out


class RestartBudget:
    """At most ``max_restarts`` restarts within any ``window_s`` seconds."""

    def __init__(self, max_restarts: int, window_s: float = RESTART_WINDOW_S) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.times: deque[float] = deque()

    def allow(self, now_s: float) -> bool:
        while self.times and now_s - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) >= self.max_restarts:
            return False
        self.times.append(now_s)
        return True
