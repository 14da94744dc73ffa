"""The default endpoints of a runtime: the one place they are written.

Both bind to the loopback interface: nothing beyond this machine can reach a runtime started with
the defaults (a non-loopback bind is logged as a warning unless CURVE is on, see edge/security.py).
The runtime (``cezsar run``), the clients (``cezsar listen``, ``cezsar actions ...``) and the docs
(docs/messages.md) use these; other outputs' defaults belong here too.
"""

from __future__ import annotations

DEFAULT_PUB = "tcp://127.0.0.1:5556"  # PUB socket: events, scores, status
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"  # REP socket: list/add/update/remove actions, status
DEFAULT_HWM = 1000  # messages queued per subscriber before PUB drops for it (4 streams at 8 msg/s: 2 minutes)
