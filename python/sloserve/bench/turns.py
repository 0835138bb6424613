"""Interleave several sequential jobs (e.g. capacity searches against different servers) one
step at a time, so that slow drifts of the machine (other processes' load) fall on all of them
alike. Each job runs in its own thread; ``turn(name)`` blocks until it is that job's turn and
passes the turn on when the step ends. Jobs take turns in the order given; a finished job
(``done``) leaves the rotation, so the rest go on without waiting for it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


class TakeTurns:
    def __init__(self, names: Sequence[str]) -> None:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need distinct job names, got {list(names)!r}")
        self.order = list(names)
        self.active = set(names)
        self.current = self.order[0]
        self.cv = threading.Condition()

    def _advance(self) -> None:
        """Hand the turn to the next active job after the current one (caller holds the lock)."""
        if not self.active:
            return
        i = self.order.index(self.current)
        for k in range(1, len(self.order) + 1):
            name = self.order[(i + k) % len(self.order)]
            if name in self.active:
                self.current = name
                break
        self.cv.notify_all()

    @contextlib.contextmanager
    def turn(self, name: str) -> Iterator[None]:
        with self.cv:
            if name not in self.active:
                raise ValueError(f"job {name!r} is done or unknown")
            self.cv.wait_for(lambda: self.current == name)
        try:
            yield
        finally:
            with self.cv:
                self._advance()

    def done(self, name: str) -> None:
        with self.cv:
            self.active.discard(name)
            if self.current == name:
                self._advance()


def run_interleaved(jobs: dict[str, Callable[[Callable[[], contextlib.AbstractContextManager]], T]]) -> dict[str, T]:
    """Run ``jobs`` (name -> fn(turn)) in threads; each fn wraps every step in ``with turn():``.
    Returns name -> result; the first exception raised by a job is re-raised after all end."""
    turns = TakeTurns(list(jobs))
    results: dict[str, T] = {}
    errors: list[BaseException] = []

    def body(name: str, fn) -> None:
        try:
            results[name] = fn(lambda: turns.turn(name))
        except BaseException as exc:  # noqa: BLE001 (re-raised below, in the caller's thread)
            errors.append(exc)
        finally:
            turns.done(name)

    threads = [threading.Thread(target=body, args=(n, f), name=f"job-{n}", daemon=True) for n, f in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
