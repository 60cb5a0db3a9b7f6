"""One model load at a time among this process's threads.

Models and tokenizers load in worker threads (``asyncio.to_thread``) so the event loop keeps
running, and transformers imports its modules lazily, on first use: two first imports racing in
two threads can fail with ImportError. Every such load goes through ``load_in_thread``, which holds
one process-wide lock, so backends may be started concurrently (the cascade's prefilter loads here
while the stream guard's engine process loads its model in its own process; a shadow guard starts
beside the live one) without racing each other's imports.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

_LOAD_LOCK = threading.Lock()


async def load_in_thread(load: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run ``load`` in a worker thread, one load at a time in this process."""

    def locked() -> _R:
        with _LOAD_LOCK:
            return load(*args, **kwargs)

    return await asyncio.to_thread(locked)
