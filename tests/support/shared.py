"""The real PostgreSQL and Redis for replica tests, each test in its own schema and key prefix, and
a TCP proxy in front of either that a test can cut to make an outage and mend to end it."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import psycopg
import pytest
import redis

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def postgres_base() -> str:
    return os.environ.get("ABGUARD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES


def redis_base() -> str:
    return os.environ.get("ABGUARD_TEST_REDIS_URL") or DEFAULT_REDIS


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL; yields a URL whose connections use it; dropped after."""
    base = postgres_base()
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        pytest.skip(f"PostgreSQL at {base} is not reachable ({error}); set ABGUARD_TEST_POSTGRES_URL")
    schema = f"abguard_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(base, schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def with_schema(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the test Redis; yields a --state URL using it; its keys deleted after."""
    base = redis_base()
    client = redis.Redis.from_url(base, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis at {base} is not reachable ({error}); set ABGUARD_TEST_REDIS_URL")
    prefix = f"abguard-test-{secrets.token_hex(4)}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def through(url: str, proxy: TcpProxy) -> str:
    """The same URL with its host and port replaced by the proxy's."""
    parts = urllib.parse.urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; cut() drops every connection and refuses new ones;
    silence() holds every byte both ways with nothing closed (a server that stops answering, packets
    dropped, no reset) until speak()."""

    def __init__(self, target_url: str) -> None:
        parts = urllib.parse.urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._silent = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()

    def mend(self) -> None:
        self._cut.clear()

    def silence(self) -> None:
        self._silent.set()

    def speak(self) -> None:
        self._silent.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self._silent.is_set() and not self._closed:
                    time.sleep(0.02)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
