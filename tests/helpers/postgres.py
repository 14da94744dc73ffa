"""A real PostgreSQL server for the history tests: Debian's postgresql binaries, a cluster made with
initdb in a temporary folder, listening on a free loopback port. As root, the server runs as the
``postgres`` user (PostgreSQL refuses to run as root). Stopped and started again on the same port
(the fault tests). ``fsync = off`` (a test machine's power does not fail), but commits stay
synchronous: a committed row survives the server being killed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.net import free_port

NO_POSTGRES = "PostgreSQL server binaries not installed (apt-get install postgresql)"
PASSWORD = "pg-test-secret-9f3"


def pg_bin() -> Path | None:
    """The folder of initdb/pg_ctl (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PostgresServer:
    def __init__(self) -> None:
        bindir = pg_bin()
        assert bindir is not None, NO_POSTGRES
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="cezsar-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        os.chmod(self.root, 0o755)
        if self.user is not None:
            shutil.chown(self.root, self.user)
        pw = self.root / "pw"
        pw.write_text(PASSWORD + "\n")
        if self.user is not None:
            shutil.chown(pw, self.user)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "cezsar",
                "--pwfile",
                str(pw),
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 50\n"
            )

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://cezsar:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    @property
    def url_without_password(self) -> str:
        return f"postgresql://cezsar@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = self.root / "server.log"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def wait_down(self, timeout: float = 20.0) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout and (self.data / "postmaster.pid").exists():
            time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def running_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server on a loopback port for the fixture that yields from this (skips the test
    without the binaries); removed afterwards."""
    import pytest

    if pg_bin() is None:
        pytest.skip(NO_POSTGRES)
    pg = PostgresServer()
    pg.start()
    try:
        yield pg
    finally:
        pg.cleanup()
