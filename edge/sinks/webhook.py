"""Webhook sink (``outputs.webhook`` / ``--webhook URL``): every event POSTed as JSON to an HTTP endpoint.

The body is the message as ZeroMQ subscribers see it, with its topic: ``{"topic": "event.cam1",
"type": "event", "phase": "start", ...}`` (edge/messages.py builds it; nothing is added here). Headers:
``Content-Type: application/json``, ``X-Cezsar-Topic``, ``Authorization: Bearer <token>`` when a token is
set, and ``X-Cezsar-Signature: sha256=<hex>`` (HMAC-SHA256 of the exact body bytes with the shared
secret) when a secret is set, so the receiver can check who sent it.

Never blocks the runtime: :meth:`WebhookSink.publish` puts the message on a bounded queue (full: counted
in ``dropped``); one worker thread POSTs them in order. A POST that fails with a network error, a
timeout, 408, 429 or a 5xx is tried again ``retries`` times with exponential backoff (0.5 s doubling up
to ``max_backoff``); after that it is counted in ``unsent`` and the next one is tried. Any other 4xx is
the receiver refusing the message: counted in ``rejected``, never retried. ``stats()`` feeds /metrics
(``cezsar_sink_messages_total{sink="webhook",outcome=...}``, ``cezsar_sink_connected``) and the status.
Secrets stay in the process: logs name the URL without its user info and query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from edge import messages
from edge.sinks import SinkContext, register_sink
from edge.worker import STOP, stop_worker

if TYPE_CHECKING:
    from edge.settings import WebhookSettings

log = logging.getLogger(__name__)

MIN_BACKOFF = 0.5
RETRY_STATUS = frozenset({408, 429})


def safe_url(url: str) -> str:
    """The URL without user info and query: what logs and the status may show."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if p.port is not None:
        netloc += f":{p.port}"
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


class _Refused(Exception):
    """The receiver answered with a status that retrying will not change."""


@register_sink("webhook")
class WebhookSink:
    name = "webhook"

    @classmethod
    def from_settings(cls, settings: WebhookSettings, ctx: SinkContext) -> WebhookSink:
        return cls(settings)

    def __init__(self, settings: WebhookSettings, *, min_backoff: float = MIN_BACKOFF) -> None:
        self.settings = settings
        self.url = settings.url
        self.shown = safe_url(settings.url)
        self._token = settings.bearer()
        key = settings.hmac_key()
        self._key = key.encode() if key else None
        self.types = frozenset(settings.topics)
        self.min_backoff = min_backoff
        self.sent = self.dropped = self.unsent = self.rejected = self.retries = 0
        self.connected: bool | None = None  # None until the first POST
        self.last_error: str | None = None
        self.closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="webhook-sink", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ caller side (never blocks)

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        if self.closed or payload.get("type") not in self.types:
            return False
        try:
            self._queue.put_nowait(messages.to_json({"topic": topic, **payload}).encode())
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "connected": bool(self.connected),
            "sent": self.sent,
            "dropped": self.dropped,
            "unsent": self.unsent,
            "rejected": self.rejected,
            "retries": self.retries,
            "queued": self._queue.qsize(),
            "url": self.shown,
            "error": self.last_error,
        }

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued while the receiver answers (at most ``timeout``, default the POST
        timeout), then stop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        wait = self.settings.timeout if timeout is None else timeout
        stop_worker(self._queue, self._worker, wait)
        self._stop.set()  # still busy (receiver down): give up the rest
        self._worker.join(1.0)

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is STOP:
                return
            self._deliver(body)
            if self._stop.is_set():
                return

    def _deliver(self, body: bytes) -> None:
        delay = self.min_backoff
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.retries += 1
                if self._stop.wait(delay):
                    break
                delay = min(2 * delay, self.settings.max_backoff)
            try:
                self._post(body)
            except _Refused as e:
                self.rejected += 1
                self._failed(str(e), connected=True)
                return
            except (OSError, urllib.error.URLError, TimeoutError) as e:
                self._failed(_reason(e), connected=False)
                continue
            self.sent += 1
            if self.connected is False:
                log.info("webhook %s: delivering again", self.shown)
            self.connected, self.last_error = True, None
            return
        self.unsent += 1

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "cezsar-webhook")
        req.add_header("X-Cezsar-Topic", json.loads(body)["topic"])
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        if self._key is not None:
            req.add_header("X-Cezsar-Signature", "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest())
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout) as resp:  # noqa: S310 - http(s) only
                resp.read(1 << 16)
        except urllib.error.HTTPError as e:
            if e.code >= 500 or e.code in RETRY_STATUS:
                raise OSError(f"HTTP {e.code}") from None
            raise _Refused(f"HTTP {e.code} (not retried)") from None

    def _failed(self, reason: str, connected: bool) -> None:
        was = self.connected
        self.connected, self.last_error = connected, reason
        if was is not False or connected:  # log a change, not every retry of an outage
            log.warning("webhook %s: %s", self.shown, reason)


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and e.reason is not None:
        e = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
    return f"{type(e).__name__}: {e}"[:200]
