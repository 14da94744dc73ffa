"""ZeroMQ CURVE encryption and authentication for the PUB and control sockets.

Key files use ZeroMQ's certificate format (readable by ``zmq.auth.load_certificate`` and by
czmq/zauth tools): ``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the secret
key. ``cezsar keys DIR --name NAME`` writes a pair; the secret file is created owner-only (0600)
and renamed into place, so it is never visible half-written or with wider permissions.

Server (``cezsar run --curve-secret server.key_secret --curve-clients DIR``): both sockets are
CURVE servers with that key; a ZAP handler (``zmq.auth.thread.ThreadAuthenticator``) accepts only
clients whose public key is one of the ``*.key`` files in DIR. A client that does not complete
the handshake with an allowed key gets no message and no reply.

Client (``--curve-secret client.key_secret --curve-server server.key``): its own pair and the
server's public key.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from cezsar.errors import CezsarError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "cezsar"
LOOPBACK_HOSTS = ("localhost", "::1", "[::1]", "ip6-localhost")


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on a loopback address."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if ";" in host:  # "source;dest" form: the bind address is the last part
        host = host.rsplit(";", 1)[1]
    host = host.strip()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _certificate(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret is not None else "Public"
    lines = [
        f"#   ****  Generated on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC by cezsar keys  ****",
        f"#   ZeroMQ CURVE **{kind}** Certificate",
    ]
    if secret is not None:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically; the file has ``mode`` from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def generate_keys(out_dir: str | Path, name: str = "server", force: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/NAME.key`` (public, 0644) and ``out_dir/NAME.key_secret`` (0600)."""
    if not name or "/" in name or name.startswith(".") or "\x00" in name:
        raise CezsarError(f"keys: --name {name!r}: give a plain file name")
    if not zmq.has("curve"):
        raise CezsarError("keys: this libzmq has no CURVE support")
    out = Path(out_dir)
    public_file, secret_file = out / f"{name}.key", out / f"{name}.key_secret"
    for p in (public_file, secret_file):
        if p.exists() and not force:
            raise CezsarError(f"keys: {p} exists (use --force to replace it)")
    public, secret = zmq.curve_keypair()
    _write_private(secret_file, _certificate(public, secret), 0o600)
    _write_private(public_file, _certificate(public, None), 0o644)
    return public_file, secret_file


def _load(path: str | Path, want_secret: bool, what: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise CezsarError(f"{what} {p}: key file not found")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as e:
        raise CezsarError(f"{what} {p}: not a ZeroMQ CURVE certificate ({e})") from None
    if len(public) != 40:
        raise CezsarError(f"{what} {p}: the public key is not a 40-character Z85 key")
    if want_secret:
        if secret is None or len(secret) != 40:
            raise CezsarError(f"{what} {p}: holds no secret key (give the .key_secret file)")
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            log.warning("%s %s: the secret key file is readable by others (mode %o); chmod 600 it", what, p, mode)
    return public, secret


@dataclass(frozen=True)
class CurveServer:
    """The runtime's key pair and the folder of allowed client public keys."""

    public: bytes
    secret: bytes
    clients_dir: Path
    clients: int

    @classmethod
    def from_settings(cls, zmq_settings: Any) -> CurveServer | None:
        """From ``outputs.zmq`` (``curve_secret`` + ``curve_clients``); None when CURVE is off."""
        if zmq_settings.curve_secret is None or zmq_settings.curve_clients is None:
            return None
        return cls.load(zmq_settings.curve_secret, zmq_settings.curve_clients)

    @classmethod
    def load(cls, secret_file: str | Path, clients_dir: str | Path) -> CurveServer:
        import zmq.auth

        public, secret = _load(secret_file, True, "--curve-secret")
        assert secret is not None
        d = Path(clients_dir)
        if not d.is_dir():
            raise CezsarError(f"--curve-clients {d}: folder of allowed client public keys not found")
        try:
            allowed = zmq.auth.load_certificates(d)
        except (OSError, ValueError) as e:
            raise CezsarError(f"--curve-clients {d}: {e}") from None
        if not allowed:
            raise CezsarError(f"--curve-clients {d}: no *.key public key files (make some with `cezsar keys`)")
        return cls(public, secret, d, len(allowed))

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (call before bind)."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    def start_authenticator(self, context: zmq.Context | None = None) -> Any:
        """The ZAP handler that admits only the allowed public keys; stop() it at shutdown."""
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(context or zmq.Context.instance(), log=logging.getLogger("cezsar.edge.auth"))
        auth.start()
        auth.configure_curve(domain=ZAP_DOMAIN, location=str(self.clients_dir))
        return auth


@dataclass(frozen=True)
class CurveClient:
    """A client's key pair and the server's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, secret_file: str | Path, server_file: str | Path) -> CurveClient:
        public, secret = _load(secret_file, True, "--curve-secret")
        server, _ = _load(server_file, False, "--curve-server")
        assert secret is not None
        return cls(public, secret, server)

    @classmethod
    def from_options(cls, secret_file: str | Path | None, server_file: str | Path | None) -> CurveClient | None:
        if not secret_file and not server_file:
            return None
        if not secret_file or not server_file:
            raise CezsarError("CURVE needs both --curve-secret (your .key_secret) and --curve-server (server .key)")
        return cls.load(secret_file, server_file)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client (call before connect)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def bind(sock: zmq.Socket, endpoint: str, what: str, curve: CurveServer | None = None) -> str:
    """Bind (as a CURVE server when ``curve``); warn when a non-loopback address has no authentication.

    Without CURVE the socket still gets a ZAP domain: libzmq then refuses ZMTP/1.0 peers, and any
    non-ZeroMQ client (an HTTP request, a port scan) looks like one. Accepted, such bytes can leave a
    half-received message in a REP socket, which then answers nobody again (libzmq 4.3)."""
    if curve is not None:
        curve.apply(sock)
    else:
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    if curve is None and not is_loopback(endpoint):
        log.warning(
            "%s %s: listening beyond this machine WITHOUT authentication or encryption; anyone who can reach it "
            "can %s (use --curve-secret/--curve-clients, see docs/reliability.md)",
            what,
            endpoint,
            "read every message" if what == "--pub" else "change the actions",
        )
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise CezsarError(f"{what} {endpoint}: cannot bind ({e})") from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


def stop_authenticator(auth: Any) -> None:
    """Stop a ZAP authenticator on the way out; a failure there is only logged (shutting down anyway)."""
    try:
        auth.stop()
    except Exception:  # noqa: BLE001
        log.debug("authenticator stop", exc_info=True)
