"""TLS and mTLS on gRPC and HTTP with real certificates from a test CA, real servers on 127.0.0.1, and a
certificate replaced on disk while they run."""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.api.servicer import create_server
from engine.cli import main
from engine.http import HttpServer
from engine.policy import load_effective
from engine.security.tls import ServerTls, channel_credentials, grpc_peer, http_peer
from engine.service import Guard
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot
from tests.support.certs import Authority, Pair

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
SERVING = health_pb2.HealthCheckResponse.SERVING
WHO = "/abguard.test.Peer/Who"  # a method added to the real server: what grpc_peer saw, and the metadata
LOCAL = ("grpc.use_local_subchannel_pool", 1)  # each channel its own connection: a new handshake


def _who(request: bytes, context: grpc.ServicerContext) -> bytes:
    peer = grpc_peer(context)
    token = dict(context.invocation_metadata()).get("authorization")
    return json.dumps({"peer": asdict(peer) if peer else None, "authorization": token}).encode()


async def _peer_route(request: Request) -> JSONResponse:
    peer = http_peer(request.scope)
    return JSONResponse({"peer": asdict(peer) if peer else None})


class Served:
    """The real gRPC server and an HTTP server sharing one ServerTls, on free ports of 127.0.0.1."""

    def __init__(self, data_dir: Path, server: Pair, client_ca: Path | None) -> None:
        self.events: list[dict[str, Any]] = []
        self.tls = ServerTls(server.cert, server.key, client_ca, on_event=self.events.append)
        self.guard = Guard(POLICY, SqliteLog.in_dir(data_dir))
        self.guard.rebuild()
        self.server, self.port, _ = create_server(self.guard, "127.0.0.1:0", 4, tls=self.tls)
        handler = grpc.unary_unary_rpc_method_handler(_who)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("abguard.test.Peer", {"Who": handler}),)
        )
        self.server.start()
        self.web = HttpServer(Starlette(routes=[Route("/peer", _peer_route)]), "127.0.0.1:0", self.tls)
        self.web.start()
        wait_until(lambda: _connects(self.web.port), "the HTTP server did not start")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.web.stop(5)
        self.server.stop(2).wait()
        self.guard.close()


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "ca")


@pytest.fixture
def served(tmp_path: Path, authority: Authority) -> Iterator[Served]:
    running = Served(tmp_path / "data", authority.server("server-plain"), None)
    yield running
    running.stop()


@pytest.fixture
def mutual(tmp_path: Path, authority: Authority) -> Iterator[Served]:
    client_ca = tmp_path / "clients-ca.pem"  # a file of its own: clients trust authority.cert for the server
    client_ca.write_bytes(authority.cert_pem)
    running = Served(tmp_path / "data", authority.server(), client_ca)
    yield running
    running.stop()


def wait_until(condition: Callable[[], bool], message: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The health status over a new connection, or raises grpc.RpcError."""
    options = [LOCAL]
    channel = (
        grpc.secure_channel(target, credentials, options)
        if credentials is not None
        else grpc.insecure_channel(target, options)
    )
    with channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def who(target: str, credentials: grpc.ChannelCredentials) -> dict[str, Any]:
    with grpc.secure_channel(target, credentials, [LOCAL]) as channel:
        answer: dict[str, Any] = json.loads(channel.unary_unary(WHO)(b"", timeout=5))
        return answer


def served_subject(port: int, ca: Path, client: Pair | None = None, alpn: str = "h2") -> str:
    """The common name of the certificate a new TLS handshake on `port` presents."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols([alpn])
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        certificate: Any = tls.getpeercert()
        subject = certificate["subject"]  # ((("commonName", "server"),),)
        return str(dict(item[0] for item in subject)["commonName"])


def https_get(port: int, path: str, ca: Path, client: Pair | None = None) -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else body.decode()
    finally:
        connection.close()


def replace_files(source: Pair, target: Pair) -> None:
    """Put `source` where `target` is the way an operator should: each file renamed into place whole."""
    for new, old in ((source.key, target.key), (source.cert, target.cert)):
        staged = old.with_suffix(".staged")
        staged.write_bytes(new.read_bytes())
        os.replace(staged, old)


def test_tls_call_succeeds_with_the_ca_and_fails_without(served: Served, authority: Authority, tmp_path: Path) -> None:
    """A client trusting the CA is served; a plaintext client and one trusting another CA are not."""
    assert health(served.target, channel_credentials(authority.cert, None, None)) == SERVING
    stranger = Authority(tmp_path / "other", "another CA")
    for credentials in (None, channel_credentials(stranger.cert, None, None)):
        with pytest.raises(grpc.RpcError) as refused:
            health(served.target, credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert who(served.target, channel_credentials(authority.cert, None, None))["peer"] is None  # no client cert


def test_mtls_requires_a_client_certificate_from_the_client_ca(
    mutual: Served, authority: Authority, tmp_path: Path
) -> None:
    """mTLS: no client certificate, or one from another CA, is refused at the handshake; the right one is
    accepted and grpc_peer gives its identity."""
    gateway = authority.client("gateway-1")
    impostor = Authority(tmp_path / "other", "another CA").client("gateway-1")
    for credentials in (
        channel_credentials(authority.cert, None, None),
        channel_credentials(authority.cert, impostor.cert, impostor.key),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            health(mutual.target, credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    answer = who(mutual.target, channel_credentials(authority.cert, gateway.cert, gateway.key))
    assert answer["peer"] == {"common_name": "gateway-1", "dns_names": ["gateway-1"], "uris": []}


def test_https_serves_with_the_certificate_and_http_peer_sees_the_client(
    served: Served, mutual: Served, authority: Authority, tmp_path: Path
) -> None:
    """HTTP over TLS: served to a client trusting the CA (no peer without mTLS); with mTLS, refused without a
    client certificate or with another CA's, and the request's scope carries the right one's identity."""
    assert https_get(served.web.port, "/peer", authority.cert) == (200, {"peer": None})
    gateway = authority.client("gateway-1")
    assert https_get(mutual.web.port, "/peer", authority.cert, gateway) == (
        200,
        {"peer": {"common_name": "gateway-1", "dns_names": ["gateway-1"], "uris": []}},
    )
    impostor = Authority(tmp_path / "other", "another CA").client("gateway-1")
    for client in (None, impostor):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(mutual.web.port, "/peer", authority.cert, client)
    with pytest.raises(ssl.SSLError):  # a client that does not trust the CA
        https_get(served.web.port, "/peer", Authority(tmp_path / "third", "a third CA").cert)


def test_a_replaced_certificate_is_served_to_new_connections_without_a_restart(
    mutual: Served, authority: Authority
) -> None:
    """Replace the certificate and key on disk: new gRPC and HTTPS handshakes present the new one; a
    replacement whose key does not match is refused, reported, and the last good one stays."""
    gateway = authority.client("gateway-1")
    credentials = channel_credentials(authority.cert, gateway.cert, gateway.key)
    with grpc.secure_channel(mutual.target, credentials) as kept:  # a connection open across the reload
        stub = health_pb2_grpc.HealthStub(kept)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        assert served_subject(mutual.port, authority.cert, gateway) == "server"
        target = Pair(mutual.tls.cert, mutual.tls.key)
        replace_files(authority.server("server-2"), target)
        for port, alpn in ((mutual.port, "h2"), (mutual.web.port, "http/1.1")):
            wait_until(
                lambda: served_subject(port, authority.cert, gateway, alpn) == "server-2",  # noqa: B023
                f"port {port} still presents the old certificate",
            )
        assert [e["event"] for e in mutual.events] == ["tls_reloaded"]
        assert mutual.events[0]["subject"] == "server-2"
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        assert who(mutual.target, credentials)["peer"]["common_name"] == "gateway-1"

        mismatched = authority.server("server-3")
        staged = target.key.with_suffix(".staged")
        staged.write_bytes(authority.server("server-4").key.read_bytes())  # not server-3's key
        os.replace(staged, target.key)
        replace_files(Pair(mismatched.cert, target.key), target)
        wait_until(  # the files are looked at on a new connection
            lambda: served_subject(mutual.port, authority.cert, gateway) == "server-2" and len(mutual.events) > 1,
            "the bad replacement was not reported",
        )
        failed = mutual.events[1]
        assert failed["event"] == "tls_reload_failed" and failed["kept"] == "server-2"
        assert f"--tls-key {target.key}: does not match the certificate" in failed["why"]
        assert served_subject(mutual.port, authority.cert, gateway) == "server-2"
        assert https_get(mutual.web.port, "/peer", authority.cert, gateway)[0] == 200
        time.sleep(1.1)  # past the next look at the files: the refusal is reported once, not on every look
        assert served_subject(mutual.web.port, authority.cert, gateway, "http/1.1") == "server-2"
        assert len(mutual.events) == 2


def test_a_replaced_client_ca_stops_trusting_the_old_one(mutual: Served, authority: Authority, tmp_path: Path) -> None:
    """A client CA file replaced by another CA: on both ports the old CA's clients are refused and the new
    one's accepted, with no restart (a context loaded in place would have kept trusting the old CA)."""
    old_client = authority.client("gateway-1")
    successor = Authority(tmp_path / "next", "next client CA")
    new_client = successor.client("gateway-2")
    assert mutual.tls.client_ca is not None
    staged = mutual.tls.client_ca.with_suffix(".staged")
    staged.write_bytes(successor.cert_pem)
    os.replace(staged, mutual.tls.client_ca)
    wait_until(
        lambda: _accepted(mutual, authority.cert, new_client) and not _accepted(mutual, authority.cert, old_client),
        "the client CA was not replaced on both ports",
    )
    assert who(mutual.target, channel_credentials(authority.cert, new_client.cert, new_client.key))["peer"] == {
        "common_name": "gateway-2", "dns_names": ["gateway-2"], "uris": [],
    }  # fmt: skip


def _accepted(served: Served, ca: Path, client: Pair) -> bool:
    """Whether a new gRPC call and a new HTTPS request with this client certificate both get through."""
    try:
        health(served.target, channel_credentials(ca, client.cert, client.key))
        https_get(served.web.port, "/peer", ca, client)
    except (grpc.RpcError, ssl.SSLError, ConnectionError):
        return False
    return True


def _expired(folder: Path) -> Pair:
    """A self-signed certificate whose validity ended yesterday, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3)).not_valid_after(now - datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pair = Pair(folder / "expired.crt", folder / "expired.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pair


def test_bad_files_are_refused_at_start_naming_the_flag(authority: Authority, tmp_path: Path) -> None:
    """An unreadable file, a key of another certificate, a client CA that is not PEM: a ValueError naming
    the flag and the file."""
    server, other = authority.server(), authority.server("other")
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    expired = _expired(tmp_path)
    cases: list[tuple[Path, Path, Path | None, str]] = [
        (missing, server.key, None, f"--tls-cert {missing}: cannot be read"),
        (server.cert, missing, None, f"--tls-key {missing}: cannot be read"),
        (server.cert, other.key, None, f"--tls-key {other.key}: does not match the certificate in --tls-cert"),
        (server.key, server.key, None, f"--tls-cert {server.key}: holds no PEM certificate"),
        (server.cert, server.cert, None, f"--tls-key {server.cert}: not an unencrypted PEM private key"),
        (server.cert, server.key, garbage, f"--tls-client-ca {garbage}: holds no PEM certificate"),
        (expired.cert, expired.key, None, f"--tls-cert {expired.cert}: expired on "),
    ]
    for cert, key, client_ca, message in cases:
        with pytest.raises(ValueError, match=r"^--tls-") as refused:
            ServerTls(cert, key, client_ca)
        assert message in str(refused.value)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--tls-cert", "c.pem"], {}, "--tls-cert and --tls-key go together"),
        (["--tls-key", "k.pem"], {}, "--tls-cert and --tls-key go together"),
        ([], {"ABGUARD_TLS_CERT": "c.pem"}, "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], {}, "--tls-client-ca (ABGUARD_TLS_CLIENT_CA) needs --tls-cert and --tls-key"),
        (["--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"], {}, "--tls-cert /no/c.pem: cannot be read"),
    ],
    ids=["cert-alone", "key-alone", "cert-from-env", "client-ca-alone", "missing-file"],
)
def test_serve_tls_flags_given_by_half_are_a_one_line_usage_error(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """`serve` with a certificate and no key (or the reverse, or a client CA alone) stops at once, exit 2."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABGUARD_TLS")}
    command = [str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env={**clean, **env},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("abguard serve: ") and message in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_client_verbs_speak_tls_with_a_ca_and_send_the_token(
    served: Served, authority: Authority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`abguard health` and `evaluate` with --tls-ca reach a TLS server; without it they cannot; half a client
    certificate is a usage error; the token goes with every call."""
    ca = ["--server", served.target, "--tls-ca", str(authority.cert)]
    assert main(["health", *ca]) == 0
    assert capsys.readouterr().out == f"{served.target}: SERVING\n"
    assert main(["health", "--server", served.target, "--timeout", "1"]) == 1  # plaintext to a TLS port
    assert "connect with --tls-ca FILE" in capsys.readouterr().err  # says what is likely wrong, not just UNAVAILABLE
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(snapshot(step=0)) + "\n")
    assert main(["evaluate", *ca, "--input", str(source)]) == 0
    assert json.loads(capsys.readouterr().out)["timestamp"] == "2026-11-24T09:00:30Z"
    client = authority.client("ops")
    assert main(["health", *ca, "--tls-cert", str(client.cert)]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    assert main(["health", *ca, "--tls-server-name", "localhost"]) == 0  # a name the certificate carries
    assert main(["health", *ca, "--tls-server-name", "abguard.example", "--timeout", "1"]) == 1  # one it does not
    capsys.readouterr()
    assert main(["rollbacks", *ca]) == 1  # reached over TLS: this server was built without rollback records
    assert "FAILED_PRECONDITION: this service keeps no rollback records" in capsys.readouterr().err

    from engine.cli.client import open_channel
    from engine.cli.common import UsageError

    parsed = argparse.Namespace(
        server=served.target, tls_ca=str(authority.cert), tls_cert=None, tls_key=None, tls_server_name=None
    )
    parsed.token = "s3cret"
    with open_channel(parsed) as channel:
        answer = json.loads(channel.unary_unary(WHO)(b"", timeout=5))
    assert answer["authorization"] == "Bearer s3cret"
    parsed.tls_ca = str(tmp_path / "nothing.pem")
    with pytest.raises(UsageError, match=r"--tls-ca .*nothing\.pem: cannot be read"):
        open_channel(parsed)


def test_the_token_goes_on_a_plaintext_channel_too(tmp_path: Path) -> None:
    """A local dev server without TLS still receives `authorization: Bearer <token>`."""
    from engine.cli.client import open_channel

    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    handler = grpc.unary_unary_rpc_method_handler(_who)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("abguard.test.Peer", {"Who": handler}),))
    server.start()
    args = argparse.Namespace(
        server=f"127.0.0.1:{port}", tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None, token="t0k"
    )
    try:
        with open_channel(args) as channel:
            answer = json.loads(channel.unary_unary(WHO)(b"", timeout=5))
    finally:
        server.stop(2).wait()
        guard.close()
    assert answer == {"peer": None, "authorization": "Bearer t0k"}


def test_serve_process_with_mtls_on_grpc_and_http(tmp_path: Path, authority: Authority) -> None:
    """`abguard serve --tls-cert --tls-key --tls-client-ca --http`: the serving line says mtls, health and
    evaluate reach it with a client certificate, HTTPS needs one too, a certificate replaced on disk is
    loaded and logged with no traffic, and SIGTERM still exits 0."""
    server, ops = authority.server(), authority.client("ops")
    command = [
        str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"), "--policies", str(ROOT / "policies"),
        "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(authority.cert),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        assert started["event"] == "serving" and started["tls"] == "mtls"
        client = ["--server", started["listen"], "--tls-ca", str(authority.cert)]
        mtls = [*client, "--tls-cert", str(ops.cert), "--tls-key", str(ops.key)]
        credentials = channel_credentials(authority.cert, ops.cert, ops.key)
        wait_until(lambda: _serving(started["listen"], credentials), "abguard serve did not become ready", 30)
        assert main(["health", *mtls]) == 0
        assert main(["health", *client, "--timeout", "2"]) == 1  # no client certificate
        source = tmp_path / "in.jsonl"
        source.write_text(json.dumps(snapshot(step=0)) + "\n")
        assert main(["evaluate", *mtls, "--input", str(source)]) == 0
        web = int(started["http"].rpartition(":")[2])
        assert https_get(web, "/healthz", authority.cert, ops)[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(web, "/healthz", authority.cert)
        lines: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: lines.extend(map(json.loads, process.stdout)), daemon=True)  # type: ignore[arg-type]
        reader.start()
        replace_files(authority.server("server-2"), server)
        wait_until(lambda: any(line["event"] == "tls_reloaded" for line in lines), "no tls_reloaded line")
        assert served_subject(web, authority.cert, ops, "http/1.1") == "server-2"
        process.send_signal(signal.SIGTERM)
        reader.join(30)
        assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
        assert lines[-1]["event"] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def _serving(target: str, credentials: grpc.ChannelCredentials) -> bool:
    try:
        return bool(health(target, credentials) == SERVING)
    except grpc.RpcError:
        return False


def test_serve_processes_forwards_the_tls_flags_to_each_process(authority: Authority) -> None:
    """`serve --processes N` starts each child with the same certificate, key and client CA."""
    from engine.cli import build_parser
    from engine.cli.supervise import _argv

    pair = authority.server()
    tls = ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--tls-client-ca", str(authority.cert)]
    args = build_parser("serve").parse_args(["serve", "--processes", "2", "--log", "postgresql://x/y", *tls])
    for index in (0, 1):
        argv = _argv(args, "127.0.0.1:50051", index)
        assert [argv[argv.index(flag) + 1] for flag in tls[::2]] == tls[1::2]
