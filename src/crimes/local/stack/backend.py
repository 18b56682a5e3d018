"""MLflow's backend store: a database on the system's PostgreSQL, or SQLite in the state dir.

PostgreSQL is a system service (started before sessions and CI), never started by the stack: we
only create MLflow's database in it when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from crimes.local.settings import StackSettings
from crimes.local.stack.procs import StackError
from crimes.ops.logs import get_logger

log = get_logger("crimes.local.stack")


def _with_database(url: str, database: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise StackError(f"CRIMES_STACK_POSTGRES_URL must be postgresql://..., got {redact(url)}")
    return parts._replace(scheme="postgresql", path=f"/{database}")


def redact(url: str) -> str:
    """The URL without its password, fit for logs and status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))


def sqlite_path(state_dir: Path) -> Path:
    return state_dir / "mlflow" / "mlflow.db"


def backend_store_uri(settings: StackSettings, state_dir: Path) -> str:
    if settings.postgres_url:
        return urlunsplit(_with_database(settings.postgres_url, settings.mlflow_database))
    return f"sqlite:///{sqlite_path(state_dir)}"


def part_name(settings: StackSettings) -> str:
    return "postgres" if settings.postgres_url else "sqlite"


def address(settings: StackSettings, state_dir: Path) -> str:
    return redact(backend_store_uri(settings, state_dir))


def _connect(url: str, database: str, timeout: int = 5) -> Any:
    import psycopg2  # type: ignore[import-untyped, unused-ignore]

    return psycopg2.connect(
        urlunsplit(_with_database(url, database)),
        connect_timeout=timeout,
        application_name="crimes-stack",
    )


def database_exists(settings: StackSettings) -> bool:
    """True when PostgreSQL answers and MLflow's database exists; False when it is absent."""
    assert settings.postgres_url
    conn = _connect(settings.postgres_url, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.mlflow_database,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def ensure_database(settings: StackSettings) -> bool:
    """Create MLflow's database when missing; returns True when it was created."""
    assert settings.postgres_url
    from psycopg2 import sql  # type: ignore[import-untyped, unused-ignore]

    try:
        conn = _connect(settings.postgres_url, "postgres")
    except Exception as exc:
        raise StackError(
            f"PostgreSQL at {redact(settings.postgres_url)} is not reachable ({exc}); it is a "
            "system service: `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or unset "
            "CRIMES_STACK_POSTGRES_URL to use SQLite"
        ) from exc
    try:
        # CREATE DATABASE cannot run inside a transaction block.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.mlflow_database,))
            if cur.fetchone() is not None:
                return False
            try:
                cur.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.mlflow_database))
                )
            except Exception as exc:
                # Another `up` may have created it between our check and our CREATE.
                if getattr(exc, "pgcode", None) != "42P04":
                    raise
                return False
    finally:
        conn.close()
    log.info("stack.postgres_database_created", database=settings.mlflow_database)
    return True


def drop_database(settings: StackSettings) -> None:
    """Drop MLflow's database (tests use it to clean up their throw-away databases)."""
    assert settings.postgres_url
    from psycopg2 import sql

    conn = _connect(settings.postgres_url, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.mlflow_database)
                )
            )
    finally:
        conn.close()


def health(settings: StackSettings, state_dir: Path) -> tuple[bool, str]:
    if not settings.postgres_url:
        path = sqlite_path(state_dir)
        return (True, f"sqlite file {path}") if path.is_file() else (False, f"no file {path} yet")
    try:
        exists = database_exists(settings)
    except Exception as exc:
        return False, f"unreachable: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}"
    if not exists:
        return False, f"reachable, database {settings.mlflow_database!r} missing"
    return True, f"reachable, database {settings.mlflow_database!r}"
