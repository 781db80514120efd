"""Tokens for the gateway's tests: good ones from a run folder's key (as `make token` mints them)
and the forgeries an attacker would try (mesh/auth/tokens.py refuses each by name)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import time

from cryptography.hazmat.primitives import serialization

from mesh.auth import tokens
from mesh.runner import topology


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def run_key(run_dir: pathlib.Path) -> tokens.SigningKey:
    return tokens.SigningKey.load_or_create(topology.auth_dir(run_dir))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(subject: str, ttl: int = 3600, **overrides) -> dict:
    now = int(time.time())
    return {"iss": tokens.ISSUER, "aud": tokens.AUDIENCE, "sub": subject, "iat": now, "exp": now + ttl, **overrides}


def unsigned(subject: str) -> str:
    """`alg: none` and no signature (RFC 7519 6's unsecured JWT)."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims(subject)).encode())}."


def hs256_with_public_key(key: tokens.SigningKey, subject: str) -> str:
    """The algorithm-confusion attack: HS256, its HMAC secret the issuer's public key (PEM) that
    anyone can read in jwks.json, and the right kid; a verifier that lets the token pick its
    algorithm would check the HMAC with that same public key and accept it."""
    secret = key.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims(subject)).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def signed_by_a_stranger(key: tokens.SigningKey, subject: str) -> str:
    """Signed by another RSA key that claims the issuer's kid: only the signature is wrong."""
    stranger = tokens.SigningKey.generate()
    return tokens.mint(tokens.SigningKey(stranger.key, key.kid), subject)
