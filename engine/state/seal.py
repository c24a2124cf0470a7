"""An HMAC-SHA256 seal over a state's bytes and everything that says which state it is.

    blob = MAGIC (4) | layout (u32) | tag (32) | body
    tag  = HMAC-SHA256(key, "abguard-state/v1" | purpose | test id | policy digest | bound | version | layout | body)

`bound` is more context the caller binds (the shared state: the hash of the log's last decision,
so a blob written for a commit that failed never fits another commit at the same version).

The tag binds the body to its test, to the log version (or checkpoint seq) it was written for, to
the policy and to the layout: a blob that was valid for another test, another version or another
policy does not open here, however it is relabelled. Who cannot read the key cannot make one.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from .wire import StateFormatError

MAGIC = b"abgS"
TAG_BYTES = 32
_HEAD = struct.Struct("<4sI")
_VERSION = struct.Struct("<q")


def seal(
    key: bytes, purpose: str, test_id: str, version: int, digest: str, layout: int, body: bytes, bound: str = ""
) -> bytes:
    tag = _tag(key, purpose, test_id, version, digest, layout, body, bound)
    return _HEAD.pack(MAGIC, layout) + tag + body


def unseal(
    key: bytes, purpose: str, test_id: str, version: int, digest: str, layout: int, blob: bytes, bound: str = ""
) -> bytes:
    """The body of a blob sealed for exactly this context; StateFormatError otherwise."""
    if len(blob) < _HEAD.size + TAG_BYTES:
        raise StateFormatError(f"{len(blob)} bytes are too few for a sealed state")
    magic, found = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise StateFormatError(f"not a sealed state (it starts {bytes(blob[:4])!r})")
    if found != layout:
        raise StateFormatError(f"layout {found}, where this build writes {layout}")
    tag, body = blob[_HEAD.size : _HEAD.size + TAG_BYTES], blob[_HEAD.size + TAG_BYTES :]
    if not hmac.compare_digest(tag, _tag(key, purpose, test_id, version, digest, layout, body, bound)):
        raise StateFormatError(
            "its seal does not match (not written by a replica holding the key, or for another test, version or policy)"
        )
    return body


def _tag(
    key: bytes, purpose: str, test_id: str, version: int, digest: str, layout: int, body: bytes, bound: str
) -> bytes:
    mac = hmac.new(key, b"abguard-state/v1", hashlib.sha256)
    for text in (purpose, test_id, digest, bound):
        data = text.encode("utf-8", "surrogatepass")
        mac.update(struct.pack("<I", len(data)) + data)
    mac.update(_VERSION.pack(version) + struct.pack("<I", layout))
    mac.update(body)
    return mac.digest()
