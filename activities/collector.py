"""Python's cyclic garbage collector, paused while an activity builds a large, short-lived book.

A reconciliation round decodes a venue's reports and the DR book into hundreds of thousands of
pydantic models that all live until the round returns. None of them is garbage while it runs,
yet each time allocations pass the collector's thresholds it walks them again, and as the
survivors pile up the walks become full collections: measured at 100,000 fills + 10,000 orders,
those walks took longer than the decoding and the diff together (README, Performance).

Pausing is safe here:
- reference counting still frees every object that is not in a cycle, at once, so nothing
  reconciliation drops is kept;
- cyclic garbage made meanwhile (by this or any other task of the worker) is only delayed: the
  collector runs again as soon as the last pause ends, and the pause is bounded by the
  activity's own calls (HTTP timeouts, its start-to-close timeout);
- the round's models are freed by reference counting when it returns, so the collector never
  has to walk them at all.

The pause is process-wide, and a worker reconciles several venues at once on one event loop:
pauses nest, and the collector is re-enabled only when the last one ends, and only if it was
enabled when the first began.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_pauses = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    # Only ever entered from the worker's event-loop thread (async activities), so the counter
    # needs no lock.
    global _pauses, _was_enabled
    if _pauses == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0 and _was_enabled:
            gc.enable()
