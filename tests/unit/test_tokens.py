"""The gateway's token verifier (mesh/auth/tokens.py) and the run folder's signing key."""

from __future__ import annotations

import json
import stat
import threading
import time

import pytest

from mesh.auth.tokens import AUDIENCE, ISSUER, KEY_FILE, KeyFileError, SigningKey, TokenError, Verifier, jwks_path, mint
from support.tokens import hs256_with_public_key, signed_by_a_stranger, unsigned

KEY = SigningKey.generate()
VERIFIER = Verifier.from_jwks(KEY.jwks())


def refused(token: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        VERIFIER.verify(token)
    return caught.value


def test_a_minted_token_verifies_to_its_subject_and_expiry():
    before = int(time.time())
    claims = VERIFIER.verify(mint(KEY, "alice", ttl=600))
    assert claims.subject == "alice" and before + 600 <= claims.expires <= int(time.time()) + 600


@pytest.mark.parametrize("forge,reason", [
    (lambda: signed_by_a_stranger(KEY, "alice"), "BAD_SIGNATURE"),
    (lambda: mint(SigningKey.generate(), "alice"), "UNKNOWN_KEY"),
    (lambda: mint(KEY, "alice", issuer="https://evil.example"), "WRONG_ISSUER"),
    (lambda: mint(KEY, "alice", audience="another-api"), "WRONG_AUDIENCE"),
    (lambda: mint(KEY, "alice", ttl=60, now=time.time() - 3600), "TOKEN_EXPIRED"),
    (lambda: mint(KEY, "alice", ttl=60, now=time.time() + 3600), "TOKEN_NOT_YET_VALID"),
    (lambda: unsigned("alice"), "ALGORITHM_NOT_ALLOWED"),
    (lambda: hs256_with_public_key(KEY, "alice"), "ALGORITHM_NOT_ALLOWED"),
    (lambda: "not.a.jwt", "TOKEN_MALFORMED"),
    (lambda: "", "TOKEN_MALFORMED"),
], ids=["bad-signature", "unknown-kid", "wrong-issuer", "wrong-audience", "expired", "not-yet-valid", "alg-none",
        "hs256-public-key", "garbage", "empty"])
def test_every_forgery_is_refused_by_name(forge, reason):
    assert refused(forge()).reason == reason


def test_the_hs256_confusion_would_pass_a_verifier_that_trusted_the_tokens_alg():
    """The forgery is real: its HMAC checks out against the public key. Only pinning RS256 stops it."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization
    token = hs256_with_public_key(KEY, "mallory")
    signing_input, _, signature = token.rpartition(".")
    secret = KEY.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert signature.encode() == expected
    assert "only RS256" in refused(token).description


def test_a_token_without_a_required_claim_or_with_a_bad_subject_is_refused():
    import jwt
    now = int(time.time())
    no_exp = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "iat": now}, KEY.key, algorithm="RS256",
                        headers={"kid": KEY.kid})
    assert refused(no_exp).reason == "MISSING_CLAIM"
    bad_sub = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "a b\"", "iat": now, "exp": now + 60}, KEY.key,
                         algorithm="RS256", headers={"kid": KEY.kid})
    assert refused(bad_sub).reason == "SUBJECT_INVALID"
    with pytest.raises(ValueError):
        mint(KEY, "has space")
    with pytest.raises(ValueError):
        mint(KEY, "alice", ttl=0)


def test_the_key_is_made_once_private_and_the_jwks_holds_only_the_public_key(tmp_path):
    auth = tmp_path / "auth"
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(SigningKey.load_or_create(auth))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({k.kid for k in keys}) == 1  # racing first runs agree on one key
    assert SigningKey.load_or_create(auth).kid == keys[0].kid  # and the next run reuses it
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    assert stat.S_IMODE((auth / KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in auth.iterdir()) == ["jwks.json", KEY_FILE]  # no temporary left
    jwks = json.loads(jwks_path(auth).read_text())
    (jwk,) = jwks["keys"]
    assert jwk["kid"] == keys[0].kid and jwk["alg"] == "RS256" and not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
    assert Verifier.from_jwks_file(jwks_path(auth)).verify(mint(keys[0], "bob")).subject == "bob"
    jwks_path(auth).write_text("{}")  # damaged: the next load writes it again
    SigningKey.load_or_create(auth)
    assert json.loads(jwks_path(auth).read_text()) == jwks


def test_a_key_readable_by_others_is_refused(tmp_path):
    auth = tmp_path / "auth"
    SigningKey.load_or_create(auth)
    (auth / KEY_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod go-rwx"):
        SigningKey.load_or_create(auth)
