"""The one way an output's background worker ends: a STOP item after what is queued, then a bounded join.
Used by the media writer and the MQTT and webhook sinks (each keeps its own queue and loop)."""

from __future__ import annotations

import queue
import threading

STOP = object()  # the item that ends a worker's loop: everything queued before it is handled first


def stop_worker(q: queue.Queue, worker: threading.Thread, timeout: float | None) -> bool:
    """Queue STOP behind the work (given up if the queue stays full for ``timeout``) and wait for the
    worker at most ``timeout`` seconds; True when it has ended."""
    try:
        q.put(STOP, timeout=timeout)
    except queue.Full:
        pass
    worker.join(timeout)
    return not worker.is_alive()
