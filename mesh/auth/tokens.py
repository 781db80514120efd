"""End-user tokens for the gateway, in the spirit of Istio's RequestAuthentication: RS256 JWTs
checked against a JWKS, with one issuer and one audience.

    key = SigningKey.load_or_create(run_dir / "auth")     # made at the first run, reused after
    token = mint(key, "alice")                            # what `make token user=alice` prints
    verifier = Verifier.from_jwks_file(run_dir / "auth" / JWKS_FILE)
    claims = verifier.verify(token)                       # or TokenError(reason, description)

The signing key is a development issuer's: RSA 2048 in `signing-key.pem` (0600, in a 0700
folder, refused if group or others may read either), never logged; `jwks.json` beside it holds
only the public key, which is all the gateway reads. PyJWT does the JOSE work and `cryptography`
the RSA; the verifier pins the algorithm to RS256 before PyJWT sees the token, so `alg: none`
and HS256 signed with the public key as the secret (the classic confusion) are refused by name.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["ALGORITHM", "AUDIENCE", "DEFAULT_TTL", "ISSUER", "JWKS_FILE", "KEY_FILE", "MAX_TTL", "Claims",
           "KeyFileError", "SigningKey", "TokenError", "Verifier", "jwks_path", "mint"]

# The one place these names are defined: the minting side and the gateway's verifier both use them.
ISSUER = "https://auth.polymesh.local"
AUDIENCE = "polymesh-gateway"
ALGORITHM = "RS256"
KEY_FILE, JWKS_FILE = "signing-key.pem", "jwks.json"
DEFAULT_TTL = 3600  # seconds
MAX_TTL = 7 * 24 * 3600  # a development token, not a credential to keep
LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
RSA_BITS = 2048
# What a subject may be: it becomes the owner of orders and a rate-limit key.
SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat")


class KeyFileError(Exception):
    """The key folder cannot be used as it is; the message says why and what to do."""


class TokenError(Exception):
    """A token that does not authenticate anyone: `reason` is an ErrorInfo reason
    (TOKEN_EXPIRED, ...), `description` what a client reads."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclasses.dataclass(frozen=True)
class Claims:
    subject: str
    expires: int


def jwks_path(auth_dir: Path) -> Path:
    return auth_dir / JWKS_FILE


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: the key id, the same for the same key on every run."""
    numbers = public.public_numbers()
    canonical = json.dumps({"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}, separators=(",", ":"),
                           sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _private_only(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by group or others (mode {mode:o}): chmod go-rwx {path}")


@dataclasses.dataclass(frozen=True)
class SigningKey:
    key: rsa.RSAPrivateKey = dataclasses.field(repr=False)
    kid: str

    @classmethod
    def generate(cls) -> SigningKey:
        """A key that lives in memory only (tests: a stranger's key, same kid or not)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        return cls(key, _thumbprint(key.public_key()))

    @classmethod
    def load_or_create(cls, auth_dir: Path) -> SigningKey:
        """The run folder's key: made at the first call (atomically: two callers at once agree on
        one key), read after; `jwks.json` beside it is written whenever it does not hold this key."""
        auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_only(auth_dir)
        path = auth_dir / KEY_FILE
        if not path.exists():
            fresh = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            pem = fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
            fd, temporary = tempfile.mkstemp(dir=auth_dir, prefix=".key-")  # mkstemp makes it 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                    out.flush()
                    os.fsync(out.fileno())
                with contextlib.suppress(FileExistsError):  # another caller made one first: theirs is used
                    os.link(temporary, path)
            finally:
                os.unlink(temporary)
        _private_only(path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError(f"{path} is not an RSA private key: remove it and a new one is made")
        signing = cls(key, _thumbprint(key.public_key()))
        try:
            current = json.loads(jwks_path(auth_dir).read_text())
        except (OSError, ValueError):
            current = None
        if current != signing.jwks():  # missing, damaged or another key's: (re)written
            signing.write_jwks(jwks_path(auth_dir))
        return signing

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}

    def write_jwks(self, path: Path) -> None:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".jwks-")
        with os.fdopen(fd, "w") as out:
            json.dump(self.jwks(), out, indent=2)
        os.chmod(temporary, 0o644)  # public: only the public key
        os.replace(temporary, path)


def mint(key: SigningKey, subject: str, ttl: int = DEFAULT_TTL, *, now: float | None = None,
         issuer: str = ISSUER, audience: str = AUDIENCE) -> str:
    """A signed token for `subject`, valid `ttl` seconds from `now`. `issuer` and `audience` are
    for tests of what the gateway refuses."""
    if not SUBJECT.fullmatch(subject):
        raise ValueError(f"subject {subject!r}: 1-128 of letters, digits and . _ @ + - (a letter or digit first)")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl {ttl}: between 1 and {MAX_TTL} seconds")
    issued = int(time.time() if now is None else now)
    claims = {"iss": issuer, "aud": audience, "sub": subject, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, key.key, algorithm=ALGORITHM, headers={"kid": key.kid})


class Verifier:
    """Checks a bearer token against the JWKS's keys: RS256 only, a known `kid`, the signature,
    then `iss`, `aud`, `exp` (and `nbf`, `iat`), and a well-formed `sub`."""

    def __init__(self, keys: dict[str, rsa.RSAPublicKey]) -> None:
        if not keys:
            raise ValueError("a JWKS with no RSA signing key")
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, jwks: dict[str, Any]) -> Verifier:
        keys: dict[str, rsa.RSAPublicKey] = {}
        for jwk in jwks.get("keys", ()):
            if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig" and jwk.get("kid"):
                key = RSAAlgorithm.from_jwk(jwk)
                keys[jwk["kid"]] = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
        return cls(keys)

    @classmethod
    def from_jwks_file(cls, path: Path) -> Verifier:
        return cls.from_jwks(json.loads(Path(path).read_text()))

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenError("TOKEN_MALFORMED", "not a JWT (header.payload.signature)") from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise TokenError("ALGORITHM_NOT_ALLOWED", f"alg {str(algorithm)[:16]!r} is not allowed: only {ALGORITHM}")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("UNKNOWN_KEY", f"kid {str(kid)[:64]!r} is not a key of the issuer's JWKS")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY,
                                options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError:
            raise TokenError("TOKEN_EXPIRED", "token expired") from None
        except jwt.InvalidSignatureError:
            raise TokenError("BAD_SIGNATURE", "signature verification failed") from None
        except jwt.InvalidIssuerError:
            raise TokenError("WRONG_ISSUER", f"issuer is not {ISSUER}") from None
        except jwt.InvalidAudienceError:
            raise TokenError("WRONG_AUDIENCE", f"audience is not {AUDIENCE}") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError("MISSING_CLAIM", f"claim {error.claim!r} required") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("TOKEN_NOT_YET_VALID", "token not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidTokenError as error:
            raise TokenError("TOKEN_INVALID", f"invalid token: {error}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
            raise TokenError("SUBJECT_INVALID", "sub must be 1-128 of letters, digits and . _ @ + -")
        return Claims(subject, int(claims["exp"]))
