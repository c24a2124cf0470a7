"""A real unleash-server on 127.0.0.1 for the tests: installed on demand, on a fresh PostgreSQL database.

Where it is installed: $ABGUARD_UNLEASH_DIR, default ~/.cache/abguard/unleash (.ci/deps/unleash.sh
installs it there, and is what runs when it is missing). Which PostgreSQL: the server of
$ABGUARD_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432), where a database
`unleash_test_<random>` is created for the run and dropped after it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("unleash_server.mjs")
INSTALL_SCRIPT = ROOT / ".ci" / "deps" / "unleash.sh"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT = 90.0  # seconds: the first start runs Unleash's migrations (about 4 s here)


class Unavailable(Exception):
    """Something the server needs is not on this machine (Node.js, PostgreSQL): the tests skip, naming it."""


@dataclass(frozen=True)
class UnleashServer:
    """A running server: its base URL and an admin token it accepts."""

    url: str
    admin_token: str
    project: str = "default"
    environment: str = "development"


def install_dir() -> Path:
    """Where unleash-server is installed for the tests."""
    configured = os.environ.get("ABGUARD_UNLEASH_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "abguard" / "unleash"


def ensure_installed() -> Path:
    """The install folder, running .ci/deps/unleash.sh first if unleash-server 8 is not in it."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Unavailable("Node.js and npm are needed to run unleash-server (install Node.js >= 20)")
    folder = install_dir()
    package = folder / "node_modules" / "unleash-server" / "package.json"
    if not (package.exists() and '"version": "8.' in package.read_text(encoding="utf-8")):
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            env={**os.environ, "ABGUARD_UNLEASH_DIR": str(folder)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"installing unleash-server failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return folder


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class _Postgres:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_env(cls) -> _Postgres:
        parts = urllib.parse.urlsplit(os.environ.get("ABGUARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES)
        host, port = parts.hostname or "127.0.0.1", parts.port or 5432
        return cls(host, port, parts.username or "postgres", parts.password or "")

    def url(self, database: str) -> str:
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        return f"postgres://{auth}@{self.host}:{self.port}/{database}"

    def sql(self, statement: str) -> subprocess.CompletedProcess[str]:
        command = ["psql", "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", "postgres", "-w"]
        env = {**os.environ, "PGPASSWORD": self.password} if self.password else dict(os.environ)
        return subprocess.run(
            [*command, "-v", "ON_ERROR_STOP=1", "-qc", statement],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not gone in 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@contextmanager
def running_unleash(log_dir: Path) -> Iterator[UnleashServer]:
    """Start unleash-server on a fresh database; stop it and drop the database on the way out."""
    if shutil.which("psql") is None:
        raise Unavailable("psql is needed to create the test database (install postgresql-client)")
    postgres = _Postgres.from_env()
    database = f"unleash_test_{secrets.token_hex(6)}"
    created = postgres.sql(f'CREATE DATABASE "{database}"')
    if created.returncode != 0:
        where = f"{postgres.user}@{postgres.host}:{postgres.port}"
        raise Unavailable(f"could not create a database on PostgreSQL at {where}: {created.stderr.strip()[:300]}")
    try:
        with _server(ensure_installed(), postgres.url(database), log_dir) as server:
            yield server
    finally:
        postgres.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@contextmanager
def _server(folder: Path, database_url: str, log_dir: Path) -> Iterator[UnleashServer]:
    """The server process in its own process group, until it answers /health; the group is ended after."""
    port = free_port()
    token = f"*:*.{secrets.token_hex(16)}"  # an admin token is scoped to all projects and environments
    env = {
        **os.environ,
        "UNLEASH_DIR": str(folder),
        "UNLEASH_PORT": str(port),
        "DATABASE_URL": database_url,
        "DATABASE_SSL": "false",
        "INIT_ADMIN_API_TOKENS": token,
        "SEND_TELEMETRY": "false",  # nothing leaves 127.0.0.1
        "CHECK_VERSION": "false",
        "LOG_LEVEL": "warn",
        "NODE_OPTIONS": "--no-deprecation",
    }
    log_path = log_dir / "unleash.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["node", str(LAUNCHER)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError(f"unleash-server did not become healthy on {url}:\n{tail}")
            time.sleep(0.2)
        yield UnleashServer(url=url, admin_token=token)
    finally:
        _stop(process)
