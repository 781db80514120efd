"""The gateway's front door, through the running mesh: who may place and read orders (RS256
tokens from the run folder's issuer), what forged tokens get, per-client rate limits, and size
limits. Each attack and its outcome is recorded in `security/attacks-gateway.json`, in the test
mesh's run folder and in the repository's `.run/`, for the issue's closing table."""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import time
import uuid

import httpx
import pytest

from mesh.auth import tokens
from services.gateway.app import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_LINE_BYTES
from support import tokens as forge
from support.poll import poll_until

ORDER = {"customerId": "me", "currency": "EUR", "items": [{"productId": "sku-kettle", "quantity": 1}],
         "payment": {"cardToken": "tok_visa"}}
REALM = 'Bearer realm="polymesh"'
REPOSITORY_RUN_DIR = pathlib.Path(__file__).resolve().parents[2] / ".run"


@pytest.fixture(scope="module")
def attacks(mesh):
    """Rows {"attack", "expected", "got"}, written after every row to the test mesh's run folder
    and to the repository's `.run/security/` (as support.figures keeps `.run/traffic/`)."""
    paths = [folder / "security" / "attacks-gateway.json" for folder in (mesh.run_dir, REPOSITORY_RUN_DIR)]
    for path in paths:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []

    def record(attack: str, expected: str, reply: httpx.Response, note: str = "") -> None:
        got = str(reply.status_code)
        if note:
            got += f" {note}"
        elif reply.headers.get("content-type", "").startswith("application/json"):
            error = reply.json().get("error", {})
            reason = next((d.get("reason") for d in error.get("details", []) if d.get("reason")), "")
            got += f" {reason or error.get('code', '')}: {error.get('message', '')}"
        elif reply.status_code >= 400:
            got += f" {reply.text.partition(':')[0]}"
        rows.append({"attack": attack, "expected": expected, "got": got})
        for path in paths:
            path.write_text(json.dumps(rows, indent=2) + "\n")

    return record


@pytest.fixture(scope="module")
def gateway(mesh):
    """An anonymous client, once the shop behind the gateway answers: in a full run this module
    is the first to call a mesh just up, and a first product page or order has been seen to time
    out (504) for some 20 s after `up` on a busy machine (a cold-start race of its own, below
    the gateway's checks)."""
    with httpx.Client(base_url=mesh.gateway, timeout=30) as client:
        poll_until(lambda: client.get("/v1/products/sku-kettle", params={"currency": "EUR"}).status_code == 200
                   and place(client, mesh.auth("warm-up")).status_code == 200, 60, 0.5, "the shop answering")
        yield client


def place(client: httpx.Client, headers: dict[str, str], key: str | None = None) -> httpx.Response:
    return client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": key or uuid.uuid4().hex, **headers})


def test_without_a_token_orders_are_401_with_a_bearer_challenge_and_browsing_is_public(gateway, attacks):
    for reply, attack in ((place(gateway, {}), "POST /v1/orders without a token"),
                          (gateway.get("/v1/orders/ord_anything"), "GET /v1/orders/{id} without a token")):
        attacks(attack, "401", reply)
        assert reply.status_code == 401, reply.text
        assert reply.headers["WWW-Authenticate"] == REALM  # RFC 6750 3.1: no error code without a token
        assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
    assert gateway.get("/v1/products", params={"pageSize": 2}).status_code == 200
    assert gateway.get("/v1/products/sku-kettle", params={"currency": "EUR"}).status_code == 200


FORGERIES = {
    "token signed by another RSA key (issuer's kid)": (forge.signed_by_a_stranger, "BAD_SIGNATURE"),
    "token from another issuer": (lambda key, sub: tokens.mint(key, sub, issuer="https://evil.example"), "WRONG_ISSUER"),
    "token for another audience": (lambda key, sub: tokens.mint(key, sub, audience="another-api"), "WRONG_AUDIENCE"),
    "expired token": (lambda key, sub: tokens.mint(key, sub, ttl=60, now=time.time() - 3600), "TOKEN_EXPIRED"),
    "alg none (unsigned) token": (lambda key, sub: forge.unsigned(sub), "ALGORITHM_NOT_ALLOWED"),
    "HS256 token signed with the issuer's public key": (forge.hs256_with_public_key, "ALGORITHM_NOT_ALLOWED"),
    "garbage bearer token": (lambda key, sub: "garbage", "TOKEN_MALFORMED"),
}


@pytest.mark.parametrize("attack", FORGERIES)
def test_a_forged_token_is_401_invalid_token_and_places_nothing(attack, mesh, gateway, attacks):
    make, reason = FORGERIES[attack]
    headers = forge.bearer(make(forge.run_key(mesh.run_dir), "mallory"))
    key = uuid.uuid4().hex
    reply = place(gateway, headers, key)
    attacks(f"POST /v1/orders with {attack}", "401", reply)
    assert reply.status_code == 401, reply.text
    assert reply.headers["WWW-Authenticate"].startswith(f'{REALM}, error="invalid_token", error_description="')
    error = reply.json()["error"]
    assert error["code"] == "UNAUTHENTICATED" and error["details"][0]["reason"] == reason, error
    # nothing was placed under that key: mallory's real first order with it is a fresh one
    real = place(gateway, mesh.auth("mallory"), key)
    assert real.status_code == 200 and real.json()["order"]["userId"] == "mallory"
    # refused on public routes too (RequestAuthentication: a bad token is never anonymous)
    assert gateway.get("/v1/products", headers=headers).status_code == 401


def test_a_user_reads_their_own_orders_and_another_users_order_is_a_plain_404(mesh, gateway, attacks):
    alice, bob = mesh.auth("alice"), mesh.auth("bob")
    placed = place(gateway, alice, "alices-key")
    assert placed.status_code == 200, placed.text
    order = placed.json()["order"]
    assert order["userId"] == "alice" and order["status"] == "ORDER_STATUS_CONFIRMED"
    mine = gateway.get(f"/v1/orders/{order['id']}", headers=alice)
    assert mine.status_code == 200 and mine.json()["order"]["id"] == order["id"]

    theirs = gateway.get(f"/v1/orders/{order['id']}", headers=bob)
    attacks("user B reads user A's order id", "404 (as a missing order)", theirs)
    missing = gateway.get("/v1/orders/ord_00000000000000000000", headers=bob)
    assert theirs.status_code == missing.status_code == 404
    said = [r.json()["error"] for r in (theirs, missing)]
    for error, order_id in zip(said, (order["id"], "ord_00000000000000000000"), strict=True):
        error["message"] = error["message"].replace(order_id, "ID")
        error["details"][0]["metadata"]["resource_ids"] = "ID"
    assert said[0] == said[1]  # nothing tells "exists, not yours" from "does not exist"

    replayed = place(gateway, bob, "alices-key")  # bob replays alice's Idempotency-Key
    attacks("user B replays user A's Idempotency-Key", "a new order of B's", replayed,
            f"a new order of {replayed.json().get('order', {}).get('userId')!r}, not A's"
            if replayed.status_code == 200 and replayed.json()["order"]["id"] != order["id"] else "")
    assert replayed.status_code == 200 and replayed.json()["order"]["id"] != order["id"]
    assert replayed.json()["order"]["userId"] == "bob"


def test_a_client_beyond_its_burst_gets_429_with_retry_after_and_gets_through_after_that_wait(mesh, gateway, attacks):
    """One user floods cheap requests (the gateway answers them itself: 400, no Idempotency-Key)
    until the bucket is empty; then waits what `Retry-After` says, and the next request passes.
    Other clients are not limited meanwhile."""
    flooder = mesh.auth(f"flood-{uuid.uuid4().hex[:8]}")
    refused: list[httpx.Response] = []
    sent = 0
    with httpx.Client(base_url=mesh.gateway, timeout=30, headers=flooder,
                      limits=httpx.Limits(max_connections=32)) as client, \
            concurrent.futures.ThreadPoolExecutor(32) as pool:
        while not refused and sent < 20_000:
            replies = list(pool.map(lambda _: client.post("/v1/orders", content=b"{}"), range(500)))
            sent += len(replies)
            refused = [r for r in replies if r.status_code == 429]
            assert {r.status_code for r in replies} <= {400, 429}
        assert refused, f"no 429 in {sent} requests"
        attacks(f"one client floods the gateway ({sent} requests, 32 at a time)", "429 + Retry-After", refused[-1],
                f"x{len(refused)}, Retry-After: {refused[-1].headers.get('Retry-After')}")
        other = gateway.get("/v1/products", params={"pageSize": 1}, headers=mesh.auth("bystander"))
        assert other.status_code == 200
        last = refused[-1]
        assert last.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        wait = int(last.headers["Retry-After"])  # whole seconds (RFC 9110 10.2.3)
        assert wait >= 1
        time.sleep(wait)  # the contract under test: after Retry-After seconds the client has a token again
        again = client.post("/v1/orders", content=b"{}")
        attacks("the same client after waiting Retry-After", "allowed again", again,
                "allowed again (400: its body is still wrong)" if again.status_code == 400 else "")
        assert again.status_code == 400


def test_oversized_body_and_headers_are_refused_with_clear_4xx(mesh, gateway, attacks):
    alice = mesh.auth("alice")
    big = gateway.post("/v1/orders", content=b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}",
                       headers={"Idempotency-Key": "big", **alice})
    attacks(f"body over {MAX_BODY_BYTES} bytes (authenticated)", "413", big)
    assert big.status_code == 413 and "larger than" in big.json()["error"]["message"]

    many = gateway.get("/v1/products", headers={**alice, "X-Padding": "a" * MAX_HEADER_BYTES})
    attacks(f"headers over {MAX_HEADER_BYTES} bytes", "431", many)
    assert many.status_code == 431 and many.json()["error"]["details"][0]["reason"] == "HEADERS_TOO_LARGE"

    huge = gateway.get("/v1/products", headers={"X-Padding": "a" * (MAX_LINE_BYTES + 1)})
    attacks(f"one header line over {MAX_LINE_BYTES} bytes", "400 (aiohttp's parser)", huge)
    assert huge.status_code == 400 and "Got more than" in huge.text
    assert gateway.get("/v1/products", params={"pageSize": 1}).status_code == 200  # and the gateway is fine


def test_the_issuers_signing_key_is_private_and_in_no_log(mesh):
    import stat

    from mesh.runner import topology
    auth = topology.auth_dir(mesh.run_dir)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    assert stat.S_IMODE((auth / tokens.KEY_FILE).stat().st_mode) == 0o600
    secret = (auth / tokens.KEY_FILE).read_text().splitlines()[1]  # the first line of key material
    leaked = [log.name for log in (mesh.run_dir / "logs").glob("*.log") if secret in log.read_text(errors="replace")]
    assert leaked == []
