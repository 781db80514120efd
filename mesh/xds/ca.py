"""The mesh CA: workload identity as X.509 certificates, written where gRPC's `file_watcher`
certificate provider reads them (the bootstrap's `default` instance, mesh/xds/bootstrap.py).

    ca = MeshCA.load_or_create(Path(".run/ca"))          # made at first run, reused after
    issued = ca.issue(WorkloadId("default", "orders"), ttl=3600)
    write_workload_files(Path(".run/certs/orders"), issued, ca.root_pem)

    issuer = Issuer(ca, Path(".run/certs"), ttl=3600)     # what the control plane runs
    issuer.ensure(identity)                               # a node opened its ADS stream
    await issuer.rotate_forever(connected)                # reissue at half the lifetime

All cryptography is `cryptography`'s (pyca: OpenSSL underneath), the Python package every
other one builds on; nothing here is hand-rolled. The CA is an EC P-256 key and a self-signed
root (10 years) in `ca.key` (mode 0600, refused if group or others may read it) and
`root-cert.pem`; a folder lock makes two control planes starting at once agree on one CA.
Workload certificates follow Istio's: a fresh EC P-256 key per issuance, an empty subject, a
critical SAN with the URI `spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE` first, server and client
auth, signed by the root directly. The SAN also names the service's DNS names (`SERVICE`, ...,
`SERVICE.NAMESPACE.svc.cluster.local`; Istio's have none), so that a plain TLS client (grpcurl, the
tests) can verify a server by host name; xDS clients check the SPIFFE URI. Per instance,
`cert-chain.pem` (the leaf), `key.pem` (0600) and `root-cert.pem` are each replaced atomically
(temp file + rename). Key material is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.xds.bootstrap import CERT_FILES, NodeIdentity
from mesh.xds.names import TRUST_DOMAIN, ServiceKey, spiffe_id

__all__ = [
    "CA_KEY",
    "CA_ROOT",
    "TRUST_DOMAIN",
    "CAError",
    "Issued",
    "Issuer",
    "MeshCA",
    "WorkloadId",
    "write_workload_files",
]

log = logging.getLogger(__name__)

CA_KEY, CA_ROOT, CA_LOCK = "ca.key", "root-cert.pem", ".lock"
ROOT_LIFETIME = datetime.timedelta(days=3650)
CHAIN_FILE, KEY_FILE, ROOT_FILE = (CERT_FILES[k] for k in ("certificate_file", "private_key_file",
                                                           "ca_certificate_file"))
DEFAULT_TTL = 3600.0  # seconds: Istio's workload certificates live 24 h; ours are shorter
MIN_TTL = 2.0  # seconds: short lifetimes are for tests of rotation
# What may become a path component or a SPIFFE path segment (Kubernetes names and a bit more).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class CAError(Exception):
    """The CA folder cannot be used as it is; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class WorkloadId:
    namespace: str
    service_account: str  # the service: every instance of a service shares its identity, as in Istio

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def dns_names(self) -> list[str]:
        """The service's host names (`NAME`, `NAME.NS`, ..., `NAME.NS.svc.cluster.local`)."""
        return ServiceKey(self.service_account, self.namespace).hosts()


@dataclasses.dataclass(frozen=True)
class Issued:
    """One workload certificate and its key (PEM). `key_pem` is secret: never log it."""

    certificate: x509.Certificate
    key_pem: bytes = dataclasses.field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def not_before(self) -> datetime.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def renew_at(self) -> datetime.datetime:
        """Half its lifetime, as istio-agent renews (SECRET_GRACE_PERIOD_RATIO 0.5)."""
        return self.not_before + (self.not_after - self.not_before) / 2


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _private(path: Path) -> None:
    """Refuse a key file that group or others may read or write."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CAError(f"the mesh CA key {path} has mode {mode:04o}: group or others may read it; refusing to use it "
                      f"(chmod 600 {path} if it is still secret, or delete {path.parent} to make a new CA)")


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """A reader sees the old file or the new one, never a part; the file never has a wider mode."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / CA_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class MeshCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, root: x509.Certificate, folder: Path | None = None) -> None:
        if key.public_key() != root.public_key():
            raise CAError(f"the mesh CA key in {folder} does not match its root certificate")
        self._key = key
        self.root = root
        self.folder = folder

    def __repr__(self) -> str:
        return f"MeshCA({self.root.subject.rfc4514_string()}, {self.folder})"

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, folder: Path | None = None) -> MeshCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                          x509.NameAttribute(NameOID.COMMON_NAME, "polymesh mesh CA")])
        now = _now()
        public = key.public_key()
        root = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + ROOT_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, root, folder)

    @classmethod
    def load_or_create(cls, folder: Path) -> MeshCA:
        """The CA kept in `folder` (made 0700 if new); a new one if the folder holds none. Raises
        CAError if the key is readable by group or others, or the files do not belong together."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, root_path = folder / CA_KEY, folder / CA_ROOT
        with _locked(folder):
            if key_path.exists() or root_path.exists():
                return cls.load(folder)
            ca = cls.create(folder)
            # the root last: a folder with a key and no root is a broken CA, never a silent new one
            _write_atomically(key_path, ca._key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()), 0o600)
            _write_atomically(root_path, ca.root_pem, 0o644)
            log.info("made a new mesh CA in %s (root serial %x, valid until %s)", folder, ca.root.serial_number,
                     ca.root.not_valid_after_utc.isoformat(), extra={"ca_dir": str(folder)})
            return ca

    @classmethod
    def load(cls, folder: Path) -> MeshCA:
        """The CA kept in `folder`; CAError if there is none (or it is unsafe or broken)."""
        key_path, root_path = folder / CA_KEY, folder / CA_ROOT
        for path in (key_path, root_path):
            if not path.exists():
                raise CAError(f"the mesh CA in {folder} lacks {path.name}; delete {folder} to make a new CA")
        _private(key_path)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            root = x509.load_pem_x509_certificate(root_path.read_bytes())
        except ValueError as error:  # the message of a bad key names no key material
            raise CAError(f"the mesh CA in {folder} cannot be read: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"the mesh CA key {key_path} is not an EC key")
        if root.not_valid_after_utc <= _now():
            raise CAError(f"the mesh CA root {root_path} expired at {root.not_valid_after_utc.isoformat()}; "
                          f"delete {folder} to make a new CA")
        ca = cls(key, root, folder)
        log.info("using the mesh CA in %s (root serial %x)", folder, root.serial_number, extra={"ca_dir": str(folder)})
        return ca

    def issue(self, workload: WorkloadId, ttl: float) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now().replace(microsecond=0)  # X.509 times are whole seconds: the lifetime is exactly ttl
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(self.root.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(seconds=max(1, round(ttl))))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(workload.spiffe_id),
                                                         *map(x509.DNSName, workload.dns_names)]),
                           critical=True)  # critical: the subject is empty (RFC 5280 4.2.1.6)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Issued(certificate, key_pem)

    def signed(self, certificate: x509.Certificate) -> bool:
        """Whether this CA signed `certificate` (signature and issuer name)."""
        try:
            certificate.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def write_workload_files(folder: Path, issued: Issued, root_pem: bytes) -> None:
    """`root-cert.pem`, then `key.pem` (0600) and `cert-chain.pem`, each replaced atomically. A
    watcher reading between the last two renames sees a key that does not match the chain: gRPC's
    file watchers keep their last good pair then, and read again at their next refresh."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomically(folder / ROOT_FILE, root_pem, 0o644)
    _write_atomically(folder / KEY_FILE, issued.key_pem, 0o600)
    _write_atomically(folder / CHAIN_FILE, issued.cert_pem, 0o644)


def spiffe_uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


class Issuer:
    """Keeps every connected instance's certificate files valid: `ensure` when a node connects,
    `rotate_forever` for as long as it stays connected. Instances are folders under `certs_dir`."""

    def __init__(self, ca: MeshCA, certs_dir: Path, ttl: float = DEFAULT_TTL) -> None:
        self.ca = ca
        self.certs_dir = certs_dir
        self.ttl = ttl
        self.issued: dict[str, Issued] = {}  # instance -> its current certificate
        self.warned: set[str] = set()  # instances whose name cannot be a folder or SPIFFE id

    def workload(self, identity: NodeIdentity) -> tuple[str, WorkloadId] | None:
        names = (identity.instance, identity.namespace, identity.service)
        if not all(SAFE_NAME.fullmatch(name) and name not in (".", "..") for name in names):
            if identity.node_id not in self.warned:
                self.warned.add(identity.node_id)
                log.warning("node %r: instance %r, namespace %r or service %r cannot name a certificate; none issued",
                            identity.node_id, *names, extra={"node_id": identity.node_id})
            return None
        return identity.instance, WorkloadId(identity.namespace, identity.service)

    def ensure(self, identity: NodeIdentity, now: datetime.datetime | None = None) -> Issued | None:
        """Issue a certificate for this node's instance unless its files hold a valid one of this CA
        with its identity, not past half its lifetime. Returns the current one (None: no valid name)."""
        named = self.workload(identity)
        if named is None:
            return None
        instance, workload = named
        now = now or _now()
        known = self.issued.get(instance)
        current = known or self._on_disk(instance)
        if current is not None and spiffe_uris(current.certificate) == [workload.spiffe_id] and now < current.renew_at:
            if known is None:
                log.debug("instance %s keeps the certificate an earlier run issued (serial %x, expires %s)",
                          instance, current.certificate.serial_number, current.not_after.isoformat(),
                          extra={"instance": instance})
            self.issued[instance] = current
            return current
        issued = self.ca.issue(workload, self.ttl)
        write_workload_files(self.certs_dir / instance, issued, self.ca.root_pem)
        self.issued[instance] = issued
        log.info("%s certificate for instance %s: %s, serial %x, expires %s",
                 "rotated" if current is not None else "issued", instance, workload.spiffe_id,
                 issued.certificate.serial_number, issued.not_after.isoformat(),
                 extra={"instance": instance, "spiffe_id": workload.spiffe_id,
                        "serial": format(issued.certificate.serial_number, "x"),
                        "expires": issued.not_after.isoformat(), "rotated": current is not None})
        return issued

    def _on_disk(self, instance: str) -> Issued | None:
        """What an earlier run left for `instance`, if this CA signed it and its key matches."""
        folder = self.certs_dir / instance
        try:
            certificate = x509.load_pem_x509_certificate((folder / CHAIN_FILE).read_bytes())
            key_pem = (folder / KEY_FILE).read_bytes()
            key = serialization.load_pem_private_key(key_pem, password=None)
            root = (folder / ROOT_FILE).read_bytes()
        except (OSError, ValueError):
            return None
        if root != self.ca.root_pem or not self.ca.signed(certificate) or key.public_key() != certificate.public_key():
            return None
        if (folder / KEY_FILE).stat().st_mode & 0o077:
            return None
        return Issued(certificate, key_pem)

    async def rotate_forever(self, connected: Callable[[], Iterable[NodeIdentity]], tick: float | None = None,
                             on_round: Callable[[], object] | None = None) -> None:
        """Every `tick` (an eighth of the lifetime, at most 5 s), reissue each connected instance's
        certificate that is past half its lifetime, then call `on_round` (the supervisor hears it
        works). Instances that left are forgotten (their files stay, and expire). A failure to
        write raises: the supervisor logs it, marks the control plane NOT_SERVING and retries."""
        tick = tick or min(max(self.ttl / 8, 0.1), 5.0)
        while True:
            await asyncio.sleep(tick)
            identities = {identity.instance: identity for identity in connected()}
            for instance in set(self.issued) - set(identities):
                del self.issued[instance]
            for identity in identities.values():
                self.ensure(identity)
            if on_round is not None:
                on_round()
