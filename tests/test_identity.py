"""Identities from credentials: static hashed tokens, JWTs signed with real RSA and EC keys against a
JWKS file (issuer, audience, expiry, key id, rotation), and client-certificate rules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from engine.security import identity
from engine.security.config import AuthFileError, load_auth
from engine.security.identity import Authenticator, Unauthenticated, new_token, token_hash

ISSUER, AUDIENCE = "https://idp.test", "abguard"


class Names:
    def __init__(self, common_name: str, dns_names: tuple[str, ...] = (), uris: tuple[str, ...] = ()) -> None:
        self.common_name, self.dns_names, self.uris = common_name, dns_names, uris


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(*keys: tuple[str, Any]) -> dict[str, Any]:
    entries = []
    for kid, key in keys:
        algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
        entry = json.loads(algorithm.to_jwk(key.public_key()))
        entry.update({"kid": kid, "use": "sig"})
        entries.append(entry)
    return {"keys": entries}


def signed(key: Any, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ci-bot", "exp": now + 300, "iat": now, "roles": ["gateway"]}
    body.update(claims)
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Authenticator, Any, Path]:
    key = rsa_key()
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(("k1", key))))
    static = new_token()
    (tmp_path / "auth.yaml").write_text(
        yaml.safe_dump(
            {
                "tokens": [{"name": "gw", "sha256": token_hash(static), "roles": ["gateway"]}],
                "jwt": {"jwks_file": "jwks.json", "issuer": ISSUER, "audience": AUDIENCE},
                "clients": [
                    {"common_name": "gateway-1", "roles": ["gateway"]},
                    {"uri": "spiffe://prod/ns/ops/sa/oncall", "name": "oncall", "roles": ["operator", "viewer"]},
                ],
            }
        )
    )
    config = load_auth(tmp_path / "auth.yaml")
    assert config.authenticator is not None
    (tmp_path / "static").write_text(static)
    return config.authenticator, key, tmp_path


def test_a_static_token_is_known_by_its_hash_only(setup: tuple[Authenticator, Any, Path]) -> None:
    authenticator, _, folder = setup
    static = (folder / "static").read_text()
    assert static not in (folder / "auth.yaml").read_text()
    who = authenticator.identify(f"Bearer {static}", None)
    assert (who.name, who.roles, who.via) == ("gw", frozenset({"gateway"}), "token")
    with pytest.raises(Unauthenticated, match="not one this server knows"):
        authenticator.identify(f"Bearer {static}x", None)
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        authenticator.identify(f"Basic {static}", None)


def test_a_valid_jwt_gives_its_subject_and_the_roles_it_claims(setup: tuple[Authenticator, Any, Path]) -> None:
    authenticator, key, _ = setup
    who = authenticator.identify(f"Bearer {signed(key, 'k1', roles=['viewer', 'auditor', 'root'])}", None)
    assert (who.name, who.roles, who.via) == ("ci-bot", frozenset({"viewer", "auditor"}), "jwt")
    spaced = authenticator.identify(f"Bearer {signed(key, 'k1', roles='operator viewer')}", None)
    assert spaced.roles == frozenset({"operator", "viewer"})


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "Audience"),
        ({"iss": "https://evil.test"}, "issuer"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "'sub' claim"),
    ],
)
def test_a_jwt_that_does_not_hold_is_unauthenticated(
    setup: tuple[Authenticator, Any, Path], claims: dict[str, Any], why: str
) -> None:
    authenticator, key, _ = setup
    with pytest.raises(Unauthenticated, match=why):
        authenticator.identify(f"Bearer {signed(key, 'k1', **claims)}", None)


def test_a_jwt_signed_by_another_key_or_with_no_signature_is_refused(setup: tuple[Authenticator, Any, Path]) -> None:
    authenticator, _, _ = setup
    with pytest.raises(Unauthenticated, match="Signature verification failed"):
        authenticator.identify(f"Bearer {signed(rsa_key(), 'k1')}", None)
    with pytest.raises(Unauthenticated, match="key id 'k9'"):
        authenticator.identify(f"Bearer {signed(rsa_key(), 'k9')}", None)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]  # what an attacker sends
    with pytest.raises(Unauthenticated):
        authenticator.identify(f"Bearer {unsigned}", None)


def test_a_rotated_jwks_file_is_used_without_a_restart(
    setup: tuple[Authenticator, Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticator, old, folder = setup
    monkeypatch.setattr(identity, "JWKS_RECHECK_SECONDS", 0.0)
    new = ec.generate_private_key(ec.SECP256R1())
    (folder / "jwks.json").write_text(json.dumps(jwks(("k2", new))))
    assert authenticator.identify(f"Bearer {signed(new, 'k2')}", None).name == "ci-bot"
    with pytest.raises(Unauthenticated, match="key id 'k1'"):  # the retired key signs nothing any more
        authenticator.identify(f"Bearer {signed(old, 'k1')}", None)
    (folder / "jwks.json").write_text("{half written")  # a bad file keeps the last good keys
    assert authenticator.identify(f"Bearer {signed(new, 'k2')}", None).name == "ci-bot"


def test_client_certificates_map_by_common_name_or_uri(setup: tuple[Authenticator, Any, Path]) -> None:
    authenticator, _, _ = setup
    assert authenticator.identify(None, Names("gateway-1")).roles == frozenset({"gateway"})
    oncall = authenticator.identify(None, Names("laptop", uris=("spiffe://prod/ns/ops/sa/oncall",)))
    assert (oncall.name, oncall.via, oncall.roles) == ("oncall", "mtls", frozenset({"operator", "viewer"}))
    with pytest.raises(Unauthenticated, match="'gateway-2'\\) is not in the auth file"):
        authenticator.identify(None, Names("gateway-2"))
    with pytest.raises(Unauthenticated, match="needs a bearer token"):
        authenticator.identify(None, None)


def test_a_token_beats_the_certificate_when_both_are_sent(setup: tuple[Authenticator, Any, Path]) -> None:
    authenticator, key, _ = setup
    who = authenticator.identify(f"Bearer {signed(key, 'k1', roles=['viewer'])}", Names("gateway-1"))
    assert (who.via, who.roles) == ("jwt", frozenset({"viewer"}))


def test_an_unusable_jwks_file_is_an_auth_file_error(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "n": "bad"}]}))
    (tmp_path / "auth.yaml").write_text(
        yaml.safe_dump({"jwt": {"jwks_file": "jwks.json", "issuer": ISSUER, "audience": AUDIENCE}})
    )
    with pytest.raises(AuthFileError, match=r"jwt\.jwks_file"):
        load_auth(tmp_path / "auth.yaml")
