"""Background read-ahead: overlap reading chunk ``i+1`` with the engine's work on chunk ``i``.

A daemon thread runs the producer (a generator that reads chunks) and puts its items in a
bounded queue of ``depth`` items, so at most ``depth + 2`` chunks exist at once (queue, the
one the thread is building, the one the engine holds). The consumer side is a generator:

* an exception raised by the producer is re-raised in the consumer, at the position of the
  item that failed, with its original traceback;
* when the consumer stops early (``break``, ``close()``, garbage collection), a stop flag is
  set and the queue is drained so the thread, waiting on a full queue, wakes up, sees the flag,
  closes the producer (which closes its files) and exits.

Both waits are bounded: the producer gives up after ``max_idle_s`` without the consumer
taking an item (an abandoned consumer that was never closed), and the consumer raises
:class:`TimeoutError` after ``max_idle_s`` without an item (a hung read).
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

_POLL_S = 0.05
_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(make: Callable[[], Iterator[T]], q: queue.Queue, stop: threading.Event, max_idle_s: float) -> None:
    max_polls = max(1, int(max_idle_s / _POLL_S))

    def put(item) -> bool:
        for _ in range(max_polls):
            if stop.is_set():
                return False
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False  # nobody has taken an item for max_idle_s: the consumer is gone

    it = None
    try:
        it = make()
        for item in it:
            if not put(item):
                return
        put(_DONE)
    except BaseException as exc:  # noqa: BLE001  (handed over to the consumer, not swallowed)
        put(_Failure(exc))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001  (closing a half-read file must not mask the result)
                pass


def read_ahead(
    make: Callable[[], Iterator[T]],
    depth: int = 2,
    max_items: int = sys.maxsize,
    max_idle_s: float = 3600.0,
    name: str = "nlsq-readahead",
) -> Iterator[T]:
    """Iterate ``make()`` in a background thread, ``depth`` items ahead of the consumer.

    ``max_items``: how many items the producer may yield at most (a source knows its
    number of chunks); more is an error. ``depth <= 0`` iterates in the calling thread."""
    if depth <= 0:
        it = make()
        try:
            for count, item in enumerate(it):
                if count >= max_items:
                    raise RuntimeError(f"the reader yielded more than the {max_items} items it announced")
                yield item
        finally:
            getattr(it, "close", lambda: None)()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(make, q, stop, max_idle_s), name=name, daemon=True)
    thread.start()
    max_polls = max(1, int(max_idle_s / _POLL_S))
    try:
        for count in range(max_items + 1):
            for _ in range(max_polls):
                try:
                    item = q.get(timeout=_POLL_S)
                    break
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        raise RuntimeError("the read-ahead thread ended without a result") from None
            else:
                raise TimeoutError(f"no chunk arrived from the reader within {max_idle_s:.0f} s")
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            if count >= max_items:
                raise RuntimeError(f"the reader yielded more than the {max_items} items it announced")
            yield item
    finally:
        stop.set()
        # Drain so that a producer blocked on a full queue wakes up and sees the flag.
        for _ in range(depth + 2):
            try:
                q.get_nowait()
            except queue.Empty:
                break
        thread.join(timeout=5.0)
