"""How every client verb reaches a server: TLS (mTLS with a client certificate) and a bearer token, one set
of options, so `evaluate`, `health` and `rollback` connect alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from .common import UsageError, env_default


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (TLS when any --tls-* is given)")
    group.add_argument(
        "--tls-ca", default=env_default("TLS_CA", None), metavar="FILE",
        help="connect with TLS, trusting the CA in this PEM file (default: the system's CAs) (ABGUARD_TLS_CA)",
    )  # fmt: skip
    group.add_argument(
        "--tls-cert", default=env_default("TLS_CLIENT_CERT", None), metavar="FILE",
        help="client certificate for mTLS, with --tls-key (ABGUARD_TLS_CLIENT_CERT)",
    )  # fmt: skip
    group.add_argument(
        "--tls-key", default=env_default("TLS_CLIENT_KEY", None), metavar="FILE",
        help="the client certificate's private key (ABGUARD_TLS_CLIENT_KEY)",
    )  # fmt: skip
    group.add_argument(
        "--tls-server-name", default=env_default("TLS_SERVER_NAME", None), metavar="NAME",
        help="the name the server's certificate must carry when it is not --server's host,"
        " e.g. a probe inside the pod dialling 127.0.0.1 (ABGUARD_TLS_SERVER_NAME)",
    )  # fmt: skip
    group.add_argument(
        "--token", default=env_default("TOKEN", None), metavar="TOKEN",
        help="bearer token sent with every call; prefer ABGUARD_TOKEN, which no process list shows",
    )  # fmt: skip


def open_channel(args: argparse.Namespace, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to args.server: TLS when any TLS option is given, else plaintext; with a token, every call
    carries `authorization: Bearer <token>` (an interceptor, so a plaintext local dev server gets it too)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together (ABGUARD_TLS_CLIENT_CERT, ABGUARD_TLS_CLIENT_KEY)")
    if args.tls_ca or args.tls_cert or args.tls_server_name:
        from ..security.tls import channel_credentials  # noqa: PLC0415  # cryptography only with TLS

        try:
            paths = (Path(p) if p else None for p in (args.tls_ca, args.tls_cert, args.tls_key))
            credentials = channel_credentials(*paths)
        except ValueError as error:
            raise UsageError(str(error)) from None
        name = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
        channel = grpc.secure_channel(args.server, credentials, options=[*options, *name])
    else:
        channel = grpc.insecure_channel(args.server, options=list(options))
    return grpc.intercept_channel(channel, _Bearer(args.token)) if args.token else channel


def failure(args: argparse.Namespace, error: grpc.RpcError) -> str:
    """A failed call in a person's words: the code, the server's details, and a hint where the usual cause
    is a plaintext client meeting a TLS server (the call then only says UNAVAILABLE, socket closed)."""
    text = f"{error.code().name}: {error.details() or ''}".rstrip(": ")
    plaintext = not (args.tls_ca or args.tls_cert or args.tls_server_name)
    if error.code() == grpc.StatusCode.UNAVAILABLE and plaintext:
        text += " (if the server was started with --tls-cert, connect with --tls-ca FILE)"
    elif error.code() == grpc.StatusCode.UNAUTHENTICATED and not args.token:
        text += " (give --token or ABGUARD_TOKEN)"
    return text


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]  # grpc ships no type hints
    def __init__(self, details: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = details.compression


_INTERCEPTORS = (
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
)  # fmt: skip


class _Bearer(*_INTERCEPTORS):  # type: ignore[misc]  # grpc ships no type hints
    """Adds the bearer token to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> _Details:
        return _Details(details, [*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def __repr__(self) -> str:  # the token never shows in a log or a traceback's locals
        return "_Bearer(<token>)"
