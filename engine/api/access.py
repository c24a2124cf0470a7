"""The Gate in front of every RiskService method: UNAUTHENTICATED, PERMISSION_DENIED naming the role
missing, RESOURCE_EXHAUSTED with google.rpc.RetryInfo, all before the method runs a line.

Health and reflection are separate services and stay open. The caller's identity is in
`security.gate.CURRENT` while the method runs, also while a server stream is being produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..security.gate import CURRENT, Denied, Gate
from ..security.identity import Identity, Peer
from ..security.roles import GRPC_METHODS

PeerOf = Callable[[grpc.ServicerContext], Peer | None]


def guarded(
    gate: Gate, method: str, behavior: Callable[..., Any], streams: bool, peer_of: PeerOf
) -> Callable[..., Any]:
    """`behavior` run only for callers the gate admits to `method`; `streams`: it returns an iterator."""
    permission = GRPC_METHODS.get(method)

    def admit(context: grpc.ServicerContext) -> Identity:
        if permission is None:  # a method the table does not list is nobody's
            abort(context, code_pb2.PERMISSION_DENIED, f"{method} is not open to any role")
            raise AssertionError("unreachable")  # abort raises
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        try:
            return gate.admit(method, permission, metadata.get("authorization"), peer_of(context), host(context.peer()))
        except Denied as denied:
            abort(context, code_pb2.Code.Value(denied.code), denied.message, retry_after=denied.retry_after)
        raise AssertionError("unreachable")  # abort raises

    if streams:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            identity = admit(context)

            def produce() -> Iterator[Any]:
                token = CURRENT.set(identity)
                try:
                    yield from behavior(request, context)
                finally:
                    CURRENT.reset(token)

            return produce()

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        token = CURRENT.set(admit(context))
        try:
            return behavior(request, context)
        finally:
            CURRENT.reset(token)

    return unary


def abort(
    context: grpc.ServicerContext, code: int, message: str, violations: Sequence[tuple[str, str]] = (),
    retry_after: float | None = None,
) -> None:  # fmt: skip
    """End the call with a google.rpc.Status: BadRequest field violations when fields are to blame,
    RetryInfo when waiting `retry_after` seconds helps."""
    status = status_pb2.Status(code=code, message=message[:4000])
    if violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text[:500])
                    for field, text in violations[:50]
                ]
            )
        )
        status.details.append(detail)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1_000_000, int(retry_after * 1e9)))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


def no_peer(context: grpc.ServicerContext) -> Peer | None:
    """A plaintext port has no client certificate (with TLS: engine/security/tls.grpc_peer)."""
    return None


def host(peer: str) -> str:
    """The address part of gRPC's peer string: ipv4:127.0.0.1:5000 -> 127.0.0.1, ipv6:[::1]:5000 -> ::1."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or kind
