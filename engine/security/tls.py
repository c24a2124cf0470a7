"""TLS and mTLS for gRPC and HTTP from one set of PEM files, picked up from disk without a restart, and the
identity in the client's verified certificate, the same for both transports, for authorization to read."""

from __future__ import annotations

import functools
import hashlib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .files import Stamp, stamp

RELOAD_CHECK_SECONDS = 1.0  # the files are looked at, on a new connection, at most this often
Stamps = tuple[Stamp | None, ...]


@dataclass(frozen=True)
class PeerCert:
    """Who the client's verified certificate says it is (what roles are granted to)."""

    common_name: str
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]


@dataclass(frozen=True)
class _Loaded:
    """One good set of files: their bytes for gRPC, a context built from them for HTTP."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    subject: str
    not_after: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(b"\0".join((self.cert, self.key, self.client_ca or b""))).hexdigest()


class ServerTls:
    """The server's certificate, key and (mTLS) client CA: checked at start, reloaded when they change on disk.

    A change is seen on the next new connection at most RELOAD_CHECK_SECONDS after it; connections open
    already keep their certificate. New files that do not work are refused, the last good ones stay in use,
    and `on_event` hears of each reload (`tls_reloaded`) and each refusal (`tls_reload_failed`) once."""

    def __init__(
        self, cert: Path, key: Path, client_ca: Path | None, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.client_ca = Path(client_ca) if client_ca is not None else None
        self._on_event = on_event or (lambda _event: None)
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._loaded = self._load()  # a ValueError naming the flag: serve's usage error
        self._checked = time.monotonic()
        self._refused: Stamps | None = None  # the files a reload refused, reported once
        self._context: _ReloadingContext | None = None

    @property
    def mutual(self) -> bool:
        """Client certificates are required and verified against the client CA."""
        return self.client_ca is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials that hand new connections the files in use at their handshake."""
        served = [self._loaded.digest]

        def fetch() -> grpc.ServerCertificateConfiguration | None:  # per handshake, on a gRPC thread
            loaded = self.current()
            if loaded.digest == served[0]:
                return None  # no change
            served[0] = loaded.digest
            return _grpc_configuration(loaded)

        return grpc.dynamic_ssl_server_credentials(
            _grpc_configuration(self._loaded), fetch, require_client_authentication=self.mutual
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The context uvicorn serves with (the same object every time): each new connection is wrapped by
        a context built from the files in use now. (Loading into one context in place cannot drop a CA:
        load_verify_locations only adds, so a CA taken out of the file would stay trusted.)"""
        with self._lock:
            if self._context is None:
                self._context = _ReloadingContext(ssl.PROTOCOL_TLS_SERVER)  # (holds no certificate itself)
                self._context.minimum_version = ssl.TLSVersion.TLSv1_2
                self._context.verify_mode = ssl.CERT_REQUIRED if self.mutual else ssl.CERT_NONE
                self._context.source = lambda: self.current().context
            return self._context

    def current(self) -> _Loaded:
        """The files in use, after looking at them on disk if that was not done in the last second."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < RELOAD_CHECK_SECONDS:
                return self._loaded
            self._checked = now
            stamp = self._stamps()
            if stamp in (self._stamp, self._refused):
                return self._loaded
            try:
                loaded = self._load()
            except Exception as error:  # half-copied files end here too: the next change is tried again
                why = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
                self._refused = stamp  # (anything but a ValueError is a bug of ours: it must not stop serving)
                self._on_event({"event": "tls_reload_failed", "why": why, "kept": self._loaded.subject})
                return self._loaded
            self._stamp, self._refused = stamp, None
            if loaded.digest != self._loaded.digest:  # (touched but equal: nothing to reload)
                self._loaded = loaded
                self._on_event({"event": "tls_reloaded", "subject": loaded.subject, "not_after": loaded.not_after})
            return self._loaded

    def _stamps(self) -> Stamps:
        """What changes when a file is written or renamed into place: inode, size, mtime and ctime."""
        return tuple(stamp(path) for path in (self.cert, self.key, self.client_ca))

    def _load(self) -> _Loaded:
        """Read and check the three files; ValueError naming the flag and file that is wrong."""
        cert, key = read_pem(self.cert, "--tls-cert"), read_pem(self.key, "--tls-key")
        client_ca = read_pem(self.client_ca, "--tls-client-ca") if self.client_ca is not None else None
        leaf = certificates(cert, f"--tls-cert {self.cert}")[0]
        if leaf.not_valid_after_utc < datetime.now(UTC):
            raise ValueError(f"--tls-cert {self.cert}: expired on {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:  # TypeError: encrypted
            raise ValueError(f"--tls-key {self.key}: not an unencrypted PEM private key: {error}") from None
        if _public(private.public_key()) != _public(leaf.public_key()):
            raise ValueError(f"--tls-key {self.key}: does not match the certificate in --tls-cert {self.cert}")
        if client_ca is not None:
            certificates(client_ca, f"--tls-client-ca {self.client_ca}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            _configure(context, self.cert, self.key, client_ca)
        except ssl.SSLError as error:
            raise ValueError(f"--tls-cert {self.cert}, --tls-key {self.key}: {error}") from None
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else leaf.subject.rfc4514_string()
        after = f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        return _Loaded(cert, key, client_ca, context, subject, after)


class _ReloadingContext(ssl.SSLContext):
    """The one context an asyncio server holds; every connection it wraps gets the context `source` gives."""

    source: Callable[[], ssl.SSLContext]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.source().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def _configure(context: ssl.SSLContext, cert: Path, key: Path, client_ca: bytes | None) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))


def _grpc_configuration(loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(loaded.key, loaded.cert)], root_certificates=loaded.client_ca)


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def read_pem(path: Path, flag: str) -> bytes:
    """A file's bytes, or a ValueError naming the flag that gave it."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot be read: {error.strerror}") from None


def certificates(data: bytes, where: str) -> list[x509.Certificate]:
    """The PEM certificates in `data`, or a ValueError saying `where` holds none."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{where}: holds no PEM certificate") from None


def channel_credentials(ca: Path | None, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    """A client's TLS: trust `ca` (else the system's CAs) and, for mTLS, present `cert` with `key`."""
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together: a client certificate and its key")
    roots = read_pem(ca, "--tls-ca") if ca is not None else None
    if roots is not None:
        certificates(roots, f"--tls-ca {ca}")
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=read_pem(key, "--tls-key") if key is not None else None,
        certificate_chain=read_pem(cert, "--tls-cert") if cert is not None else None,
    )


def grpc_peer(context: grpc.ServicerContext) -> PeerCert | None:
    """The verified client certificate of a gRPC call, or None (no TLS, or TLS without client certificates)."""
    auth: Mapping[str, list[bytes]] = context.auth_context() or {}
    pem = auth.get("x509_pem_cert")
    if pem:
        return peer_of_pem(pem[0])
    names = auth.get("x509_common_name")
    if not names:
        return None
    alternative = [value.decode("utf-8", "replace") for value in auth.get("x509_subject_alternative_name", [])]
    uris = tuple(name for name in alternative if "://" in name)
    return PeerCert(names[0].decode("utf-8", "replace"), tuple(n for n in alternative if n not in uris), uris)


def http_peer(scope: Mapping[str, Any]) -> PeerCert | None:
    """The verified client certificate of an HTTP request (the ASGI TLS extension in its scope), or None."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    first = chain[0]
    return peer_of_pem(first.encode("ascii") if isinstance(first, str) else first)


def asgi_tls_extension(ssl_object: ssl.SSLObject | None) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (`scope["extensions"]["tls"]`), or None without TLS."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []  # Python exposes the leaf only
    client = _certificate(chain[0].encode("ascii")) if chain else None
    versions = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": client.subject.rfc4514_string() if client is not None else None,
        "client_cert_error": None,
        "tls_version": versions.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


@functools.lru_cache(maxsize=1024)
def peer_of_pem(pem: bytes) -> PeerCert | None:
    """The identity in a PEM certificate, or None when it cannot be read; remembered, because every
    call of a client presents the same certificate and parsing one costs more than the call's check."""
    cert = _certificate(pem)
    if cert is None:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return PeerCert(common_name, (), ())
    dns = tuple(alternative.get_values_for_type(x509.DNSName))
    return PeerCert(common_name, dns, tuple(alternative.get_values_for_type(x509.UniformResourceIdentifier)))


def _certificate(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
