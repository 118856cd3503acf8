"""A bounded, thread-safe least-recently-used mapping: the one shape of the engine's caches.

Front-door caches (compiled solvers, plans, models, device copies) are read on every
repeated call and written rarely; they must stay bounded (a long-lived worker fits many
models) and safe under threads (Prefect task runners, progress callbacks).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

_MISSING = object()


class BoundedLRU:
    """At most ``size`` entries; a hit makes its entry the newest, a put drops the oldest."""

    def __init__(self, size: int):
        self.size = int(size)
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._entries.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
