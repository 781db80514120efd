"""The control plane as a process with its mesh CA: a node that opens its ADS stream finds its
certificate files (where its bootstrap's `file_watcher` provider reads them) before it hears
anything, they are replaced at half their lifetime while it stays connected, the CA survives a
restart, and a CA key others may read stops the control plane at start."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from support.ads import EDS, AdsClient
from support.xds import ControlPlane

pytestmark = pytest.mark.integration

ORDERS_EDS = "outbound|50091||orders.default.svc.cluster.local"
ORDERS_SPIFFE = "spiffe://cluster.local/ns/default/sa/orders"


def run(coroutine, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def load(folder: Path) -> tuple[x509.Certificate, bytes, bytes]:
    """(leaf, key PEM, root PEM) of one instance's files."""
    return (x509.load_pem_x509_certificate((folder / "cert-chain.pem").read_bytes()),
            (folder / "key.pem").read_bytes(), (folder / "root-cert.pem").read_bytes())


def check_files(folder: Path, spiffe_id: str) -> x509.Certificate:
    """The three files are a working identity: the chain verifies against root-cert.pem, the SAN
    is the SPIFFE id (then the service's DNS names), the key is the certificate's and nobody else
    may read it."""
    leaf, key_pem, root_pem = load(folder)
    store = verification.Store([x509.load_pem_x509_certificate(root_pem)])
    verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    verified = verifier.verify(leaf, [])
    namespace, service = spiffe_id.split("/")[-3], spiffe_id.split("/")[-1]
    assert [san.value for san in verified.subjects] == [spiffe_id, service, f"{service}.{namespace}",
                                                         f"{service}.{namespace}.svc",
                                                         f"{service}.{namespace}.svc.cluster.local"]
    assert serialization.load_pem_private_key(key_pem, None).public_key() == leaf.public_key()
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    return leaf


async def first_files(cp: ControlPlane, instance: str, service: str, timeout: float = 1.0) -> float:
    """Open a node's stream and return how long its files took to appear (asserted < timeout);
    the stream's first response comes after them."""
    folder = cp.certs_dir / instance
    async with AdsClient(cp.address, instance=instance, service=service) as ads:
        started = time.monotonic()
        await ads.send(EDS, [ORDERS_EDS])
        while not (folder / "cert-chain.pem").exists():
            assert time.monotonic() - started < timeout, f"no certificate for {instance} after {timeout} s"
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        await ads.recv()
    return took


def test_a_connecting_node_gets_its_certificate_before_its_first_response(control_plane: ControlPlane):
    async def scenario():
        folder = control_plane.certs_dir / "orders-1"
        async with AdsClient(control_plane.address, instance="orders-1", service="orders") as ads:
            started = time.monotonic()
            await ads.request(EDS, [ORDERS_EDS])
            answered = time.monotonic() - started
            assert (folder / "key.pem").exists(), "answered before the certificate was written"
            return answered

    answered = run(scenario())
    assert answered < 1.0
    leaf = check_files(control_plane.certs_dir / "orders-1", ORDERS_SPIFFE)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(hours=1)
    assert (control_plane.certs_dir / "orders-1" / "root-cert.pem").read_bytes() == \
        (control_plane.ca_dir / "root-cert.pem").read_bytes()
    assert stat.S_IMODE((control_plane.ca_dir / "ca.key").stat().st_mode) == 0o600
    issued = [line for line in control_plane.logs() if line.get("message", "").startswith("issued certificate")]
    assert len(issued) == 1, issued
    assert issued[0]["severity"].lower() == "info"
    assert issued[0]["instance"] == "orders-1" and issued[0]["spiffe_id"] == ORDERS_SPIFFE
    assert issued[0]["expires"] == leaf.not_valid_after_utc.isoformat()
    log_text = control_plane.proc.log_text()
    assert "PRIVATE KEY" not in log_text
    key_body = (control_plane.certs_dir / "orders-1" / "key.pem").read_text().splitlines()[1]
    ca_key_body = (control_plane.ca_dir / "ca.key").read_text().splitlines()[1]
    assert key_body not in log_text and ca_key_body not in log_text


def test_files_appear_within_a_second_for_each_instance(control_plane: ControlPlane):
    for instance, service in (("catalog-v1", "catalog"), ("payments", "payments"), ("inventory-2", "inventory")):
        took = run(first_files(control_plane, instance, service))
        assert took < 1.0
        check_files(control_plane.certs_dir / instance, f"spiffe://cluster.local/ns/default/sa/{service}")


def test_certificates_are_rotated_at_half_their_lifetime_while_connected(consul_agent, start_control_plane):
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_CERT_TTL": "4"})
    folder = cp.certs_dir / "orders-1"

    async def scenario():
        async with AdsClient(cp.address, instance="orders-1", service="orders") as ads:
            await ads.request(EDS, [ORDERS_EDS])
            first = check_files(folder, ORDERS_SPIFFE)
            assert first.not_valid_after_utc - first.not_valid_before_utc == datetime.timedelta(seconds=4)
            serials, current = [first.serial_number], first
            deadline = time.monotonic() + 9
            while len(serials) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                leaf = check_files(folder, ORDERS_SPIFFE)
                if leaf.serial_number != current.serial_number:
                    now = datetime.datetime.now(datetime.UTC)
                    assert now < current.not_valid_after_utc, "replaced only after the old one expired"
                    serials.append(leaf.serial_number)
                    current = leaf
            return serials

    serials = run(scenario())
    assert len(serials) == 3 and len(set(serials)) == 3, f"rotations seen: {serials}"
    rotated = [line for line in cp.logs() if line.get("message", "").startswith("rotated certificate")]
    assert len(rotated) >= 2 and all(line["instance"] == "orders-1" for line in rotated)


def test_grpc_go_file_watcher_picks_up_rotation_without_a_restart(consul_agent, start_control_plane, go_certwatch,
                                                                  procs):
    """grpc-go's `file_watcher` plugin (pemfile), as an instance's bootstrap configures it, serves
    each new certificate of a connected instance: one process, several serials, each verifying."""
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_CERT_TTL": "4"})

    async def scenario():
        async with AdsClient(cp.address, instance="inventory-1", service="inventory") as ads:
            await ads.request(EDS, [ORDERS_EDS])
            watcher = procs.start("certwatch", [str(go_certwatch), "-dir", str(cp.certs_dir / "inventory-1"),
                                                "-refresh", "500ms", "-for", "7s"])
            while watcher.alive():
                await asyncio.sleep(0.1)
            return watcher

    watcher = run(scenario())
    assert watcher.popen.returncode == 0, watcher.log_text()
    seen = [json.loads(line) for line in watcher.log_lines() if line.startswith("{")]
    assert len({s["serial"] for s in seen}) >= 3, watcher.log_text()  # the first and at least two rotations
    assert all(s["uris"] == ["spiffe://cluster.local/ns/default/sa/inventory"] and s["verified"] for s in seen)
    for old, new in itertools.pairwise(seen):  # each new one was served while the one before was still valid
        assert datetime.datetime.fromisoformat(new["at"]) < datetime.datetime.fromisoformat(old["not_after"])


def test_a_restart_reuses_the_ca_and_valid_certificates(consul_agent, start_control_plane, tmp_path):
    env = {"MESH_RUN_DIR": str(tmp_path / "run")}
    first = start_control_plane(consul_agent.http_addr, name="xds-1", env=env)
    run(first_files(first, "orders-1", "orders"))
    root = (first.ca_dir / "root-cert.pem").read_bytes()
    serial = load(first.certs_dir / "orders-1")[0].serial_number
    assert first.proc.stop() == 0

    second = start_control_plane(consul_agent.http_addr, name="xds-2", env=env)
    assert second.ca_dir == first.ca_dir
    run(first_files(second, "orders-1", "orders"))
    run(first_files(second, "payments", "payments"))
    assert (second.ca_dir / "root-cert.pem").read_bytes() == root
    assert load(second.certs_dir / "orders-1")[0].serial_number == serial  # not past half its life: kept
    check_files(second.certs_dir / "payments", "spiffe://cluster.local/ns/default/sa/payments")
    assert load(second.certs_dir / "payments")[2] == root
    assert any(line.get("message", "").startswith("using the mesh CA") for line in second.logs())


def test_a_ca_key_others_may_read_is_refused(consul_agent, start_control_plane, tmp_path):
    env = {"MESH_CA_DIR": str(tmp_path / "ca"), "MESH_CERTS_DIR": str(tmp_path / "certs")}
    first = start_control_plane(consul_agent.http_addr, name="xds-1", env=env)
    assert first.proc.stop() == 0
    os.chmod(tmp_path / "ca" / "ca.key", 0o644)

    refused = start_control_plane(consul_agent.http_addr, name="xds-2", env=env, wait=False)
    assert refused.proc.popen.wait(15) == 2
    errors = [line for line in refused.logs() if line.get("severity", "").lower() == "error"]
    assert len(errors) == 1, refused.proc.log_text()
    assert f"the mesh CA key {tmp_path / 'ca' / 'ca.key'} has mode 0644: group or others may read it; " \
           "refusing to use it" in errors[0]["message"]
    assert "PRIVATE KEY" not in refused.proc.log_text()


def test_two_instances_complete_a_mutual_tls_handshake_with_their_files(control_plane: ControlPlane):
    """OpenSSL (Python's ssl) as both ends of mutual TLS with the issued files: the server sees the
    client's SPIFFE id and the client the server's (tests/conformance/test_mtls.py: gRPC's)."""
    run(first_files(control_plane, "orders-1", "orders"))
    run(first_files(control_plane, "payments", "payments"))

    def context(side: int, instance: str) -> ssl.SSLContext:
        folder = control_plane.certs_dir / instance
        ctx = ssl.SSLContext(side)
        ctx.check_hostname = False  # SPIFFE identities are URI SANs: checked below, as gRPC's xDS TLS does
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(folder / "cert-chain.pem", folder / "key.pem")
        ctx.load_verify_locations(folder / "root-cert.pem")
        return ctx

    server_side, client_side = socket.socketpair()
    peers: dict[str, object] = {}

    def serve():
        with context(ssl.PROTOCOL_TLS_SERVER, "payments").wrap_socket(server_side, server_side=True) as tls:
            peers["client"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with context(ssl.PROTOCOL_TLS_CLIENT, "orders-1").wrap_socket(client_side) as tls:
        peers["server"] = tls.getpeercert()
        assert tls.recv(2) == b"ok"
    thread.join(5)
    assert peers["client"]["subjectAltName"][0] == ("URI", ORDERS_SPIFFE)
    assert peers["server"]["subjectAltName"][0] == ("URI", "spiffe://cluster.local/ns/default/sa/payments")
