"""mesh.xds.ca: the mesh CA's folder, the certificates it issues and the files it writes."""

from __future__ import annotations

import datetime
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.xds import bootstrap
from mesh.xds.bootstrap import NodeIdentity
from mesh.xds.ca import CAError, Issuer, MeshCA, WorkloadId, write_workload_files


def identity(service: str = "orders", instance: str = "orders-1", namespace: str = "default") -> NodeIdentity:
    node = bootstrap.Node(service, instance, "v1", namespace=namespace)
    doc = bootstrap.bootstrap(node, "127.0.0.1:1", ".")["node"]
    return NodeIdentity.parse(doc["id"], doc["cluster"], doc["metadata"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verify(chain_pem: bytes, root_pem: bytes) -> x509.Certificate:
    """Verify as a TLS client verifies a client certificate (cryptography's X.509 path validation)."""
    root = x509.load_pem_x509_certificate(root_pem)
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = (verification.PolicyBuilder().store(verification.Store([root]))
                .time(datetime.datetime.now(datetime.UTC)).build_client_verifier())
    verified = verifier.verify(leaf, intermediates)
    return verified.chain[0]


def test_ca_is_made_once_with_a_private_key_and_reused(tmp_path):
    folder = tmp_path / "ca"
    ca = MeshCA.load_or_create(folder)
    assert mode(folder / "ca.key") == 0o600
    assert mode(folder) == 0o700
    root = x509.load_pem_x509_certificate((folder / "root-cert.pem").read_bytes())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = MeshCA.load_or_create(folder)
    assert again.root_pem == ca.root_pem == (folder / "root-cert.pem").read_bytes()


@pytest.mark.parametrize("wide", [0o644, 0o640, 0o604, 0o660])
def test_a_key_readable_by_others_is_refused(tmp_path, wide):
    folder = tmp_path / "ca"
    MeshCA.load_or_create(folder)
    os.chmod(folder / "ca.key", wide)
    with pytest.raises(CAError, match=rf"ca.key has mode {wide:04o}: group or others may read it; refusing"):
        MeshCA.load_or_create(folder)


def test_a_ca_folder_with_half_a_ca_is_refused_not_replaced(tmp_path):
    folder = tmp_path / "ca"
    MeshCA.load_or_create(folder)
    (folder / "root-cert.pem").unlink()
    with pytest.raises(CAError, match=r"lacks root-cert\.pem"):
        MeshCA.load_or_create(folder)
    assert (folder / "ca.key").exists()


def test_a_key_of_another_root_is_refused(tmp_path):
    one, other = tmp_path / "one", tmp_path / "other"
    MeshCA.load_or_create(one), MeshCA.load_or_create(other)
    os.replace(other / "root-cert.pem", one / "root-cert.pem")
    with pytest.raises(CAError, match="does not match its root certificate"):
        MeshCA.load_or_create(one)


def test_workload_certificate_is_istios_shape(tmp_path):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    issued = ca.issue(WorkloadId("shop", "orders"), ttl=30)
    leaf = verify(issued.cert_pem, ca.root_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/shop/sa/orders"]
    # and the service's host names, so that plain TLS clients can check whom they reached
    assert san.value.get_values_for_type(x509.DNSName) == ["orders", "orders.shop", "orders.shop.svc",
                                                            "orders.shop.svc.cluster.local"]
    assert leaf.subject == x509.Name([])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued.not_after - issued.not_before == datetime.timedelta(seconds=30)
    key = serialization.load_pem_private_key(issued.key_pem, None)
    assert key.public_key() == leaf.public_key()
    assert "PRIVATE" not in repr(issued)


def test_each_issuance_has_a_fresh_key_and_serial(tmp_path):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    one, two = (ca.issue(WorkloadId("default", "orders"), ttl=60) for _ in range(2))
    assert one.key_pem != two.key_pem
    assert one.certificate.serial_number != two.certificate.serial_number


def test_another_ca_does_not_verify(tmp_path):
    ca, other = MeshCA.load_or_create(tmp_path / "ca"), MeshCA.load_or_create(tmp_path / "other")
    issued = other.issue(WorkloadId("default", "orders"), ttl=60)
    with pytest.raises(verification.VerificationError):
        verify(issued.cert_pem, ca.root_pem)
    assert not ca.signed(issued.certificate) and other.signed(issued.certificate)


def test_files_are_written_with_private_key_modes(tmp_path):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    folder = tmp_path / "certs" / "orders-1"
    write_workload_files(folder, ca.issue(WorkloadId("default", "orders"), ttl=60), ca.root_pem)
    assert sorted(p.name for p in folder.iterdir()) == ["cert-chain.pem", "key.pem", "root-cert.pem"]  # no temps
    assert mode(folder / "key.pem") == 0o600
    verify((folder / "cert-chain.pem").read_bytes(), (folder / "root-cert.pem").read_bytes())


def test_issuer_issues_once_then_reuses_until_half_life(tmp_path, caplog):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    issuer = Issuer(ca, tmp_path / "certs", ttl=60)
    with caplog.at_level(logging.INFO, logger="mesh.xds.ca"):
        first = issuer.ensure(identity())
        assert issuer.ensure(identity()) is first
        later = first.not_before + datetime.timedelta(seconds=31)
        rotated = issuer.ensure(identity(), now=later)
    assert rotated.certificate.serial_number != first.certificate.serial_number
    messages = [r.getMessage() for r in caplog.records if r.name == "mesh.xds.ca"]
    assert [m.split(" ")[0] for m in messages if "instance orders-1" in m] == ["issued", "rotated"]
    assert all("spiffe://cluster.local/ns/default/sa/orders" in m for m in messages if "instance" in m)
    key_text = rotated.key_pem.decode()
    assert not any(key_text.splitlines()[1] in r.getMessage() for r in caplog.records)


def test_issuer_reuses_what_an_earlier_run_left(tmp_path):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    first = Issuer(ca, tmp_path / "certs", ttl=60).ensure(identity())
    again = Issuer(MeshCA.load_or_create(tmp_path / "ca"), tmp_path / "certs", ttl=60).ensure(identity())
    assert again.certificate.serial_number == first.certificate.serial_number
    # a new CA does not trust the old files: it issues anew
    fresh = Issuer(MeshCA.load_or_create(tmp_path / "ca2"), tmp_path / "certs", ttl=60).ensure(identity())
    assert fresh.certificate.serial_number != first.certificate.serial_number


def test_issuer_reissues_when_the_identity_changes(tmp_path):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    issuer = Issuer(ca, tmp_path / "certs", ttl=60)
    issuer.ensure(identity(service="orders"))
    moved = issuer.ensure(identity(service="payments"))
    assert moved.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/default/sa/payments"]


@pytest.mark.parametrize("instance", ["../escape", "a/b", ".."])
def test_names_that_cannot_be_folders_get_nothing(tmp_path, instance):
    ca = MeshCA.load_or_create(tmp_path / "ca")
    issuer = Issuer(ca, tmp_path / "certs", ttl=60)
    odd = NodeIdentity(instance, "orders", instance, "default", (), {})
    assert issuer.ensure(odd) is None
    assert not (tmp_path / "certs").exists()


def test_rotation_reissues_connected_instances_and_forgets_those_that_left(tmp_path):
    import asyncio

    ca = MeshCA.load_or_create(tmp_path / "ca")
    issuer = Issuer(ca, tmp_path / "certs", ttl=2)
    connected = [identity("orders", "orders-1"), identity("payments", "payments")]
    first = {i.instance: issuer.ensure(i).certificate.serial_number for i in connected}
    rounds = []

    async def scenario():
        task = asyncio.create_task(issuer.rotate_forever(lambda: list(connected), tick=0.05,
                                                         on_round=lambda: rounds.append(1)))
        connected.pop()  # payments leaves
        await asyncio.sleep(1.6)  # past half of 2 s (whole seconds: issued at most 1 s ago)
        task.cancel()

    asyncio.run(scenario())
    assert rounds
    assert set(issuer.issued) == {"orders-1"}
    assert issuer.issued["orders-1"].certificate.serial_number != first["orders-1"]
    on_disk = x509.load_pem_x509_certificate((tmp_path / "certs" / "payments" / "cert-chain.pem").read_bytes())
    assert on_disk.serial_number == first["payments"]  # not rotated once it left
