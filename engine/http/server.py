"""uvicorn in a thread of the serving process, on a socket bound first (port 0 picks a free one)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

    from ..security.tls import ServerTls


class HttpServer:
    def __init__(
        self, app: Starlette, address: str, tls: ServerTls | None = None, trusted_proxies: Sequence[str] = ()
    ) -> None:
        """`trusted_proxies`: the addresses or networks whose X-Forwarded-For names the caller; from
        any other peer the header is ignored (uvicorn would trust 127.0.0.1 and FORWARDED_ALLOW_IPS)."""
        trusted = trusted_networks(trusted_proxies)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise OSError(f"{address!r} is not HOST:PORT")
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and the accepted
        # ones inherit it; without it Nagle holds each response's body for the client's delayed ACK (~40 ms)
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host.strip("[]"), int(port)))
        except OSError:
            self.socket.close()
            raise
        self.socket.listen(128)
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        context = tls.ssl_context() if tls is not None else None
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            http=PeerCertProtocol if tls is not None else "auto",
            ssl_context_factory=(lambda _config, _default: context) if context is not None else None,
            proxy_headers=bool(trusted), forwarded_allow_ips=[str(network) for network in trusted],
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="abguard-http", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self.socket.close()


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, with each request's scope carrying its connection's TLS as the ASGI TLS extension
    spells it (`scope["extensions"]["tls"]["client_cert_chain"]`), which uvicorn itself leaves out."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # (an SSL transport reaches here once the handshake is done)
        from ..security.tls import asgi_tls_extension  # noqa: PLC0415  # cryptography only with TLS

        tls = asgi_tls_extension(transport.get_extra_info("ssl_object"))
        if tls is None:
            return
        app = self.app

        async def with_tls(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            extended = cast(dict[str, Any], scope)
            extended["extensions"] = {**(extended.get("extensions") or {}), "tls": tls}
            await app(scope, receive, send)

        self.app = with_tls


def trusted_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Addresses or CIDR networks (`10.0.0.0/8`, `::1`), each checked; ValueError names the bad one."""
    out = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"--trusted-proxies: {text!r} is not an IP address or network") from None
    return tuple(out)
