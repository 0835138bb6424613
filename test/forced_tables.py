"""Collect every ``ForcedTable`` the planner builds while a block runs (its work counters)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sloserve.planner.batch import ForcedTable


@contextmanager
def forced_tables() -> Iterator[list[ForcedTable]]:
    tables: list[ForcedTable] = []
    init = ForcedTable.__init__

    def counted_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        tables.append(self)

    ForcedTable.__init__ = counted_init
    try:
        yield tables
    finally:
        ForcedTable.__init__ = init
