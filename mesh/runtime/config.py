"""Configuration from environment variables, parsed once, failing fast on every bad value.

`EnvReader` collects every problem instead of stopping at the first, so a user who got three
variables wrong reads about all three in one run (see docs/runtime-contract.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
from collections.abc import Mapping

__all__ = ["ConfigError", "EnvReader", "InstanceConfig", "load_instance_config"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("debug", "info", "warn", "error")
MAX_INJECT_DELAY_MS = 3_600_000  # an hour: MESH_INJECT_DELAY_MS is for demos and tests
HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # lower-case gRPC metadata keys
CONSUL_TOKEN = re.compile(r"[\x21-\x7e]+")  # it travels in the X-Consul-Token header


class ConfigError(ValueError):
    """One or more environment variables are invalid; the message names all of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


class EnvReader:
    """Reads typed values from an environment mapping and remembers every bad one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def string(self, name: str, default: str, *, choices: tuple[str, ...] | None = None) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if choices is not None and value.lower() not in choices:
            self._problems.append(f"{name}: must be one of {', '.join(choices)}: {json.dumps(value)}")
            return default
        return value.lower() if choices is not None else value

    def consul_token(self, name: str = "CONSUL_HTTP_TOKEN", file_name: str = "CONSUL_HTTP_TOKEN_FILE") -> str:
        """Consul's ACL token, as Consul's own CLI takes it: the value of `name`, or the contents of
        the file `file_name` names (read once, here); "" for none. A problem never shows the secret."""
        value, path, source = self._raw(name), self._raw(file_name), name
        if value is not None and path is not None:
            self._problems.append(f"{file_name}: {name} is set too; give one")
            return ""
        if path is not None:
            source = file_name
            try:
                with open(path, encoding="utf-8") as file:
                    value = file.read().strip()
            except (OSError, UnicodeDecodeError):
                self._problems.append(f"{file_name}: cannot read {json.dumps(path)}")
                return ""
            if not value:
                self._problems.append(f"{file_name}: {json.dumps(path)} is empty")
                return ""
        if value is not None and not CONSUL_TOKEN.fullmatch(value):
            self._problems.append(f"{source}: not a token (printable ASCII, no spaces)")
            return ""
        return value or ""

    def required(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            self._problems.append(f"{name}: required")
            return ""
        return value

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self._problems.append(f"{name}: not an integer: {json.dumps(value)}")
            return default
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            self._problems.append(f"{name}: must be between {minimum} and {maximum}: {number}")
            return default
        return number

    def seconds(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self._problems.append(f"{name}: not a number of seconds: {json.dumps(value)}")
            return default
        if number <= 0:
            self._problems.append(f"{name}: must be > 0: {value}")
            return default
        if minimum is not None and number < minimum:
            self._problems.append(f"{name}: must be at least {minimum:g} s: {value}")
            return default
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        self._problems.append(f"{name}: not a boolean (true/false): {json.dumps(value)}")
        return default

    def service_ports(self, name: str) -> dict[str, int]:
        """`name=port,...` (MESH_SERVICE_PORTS); an empty value is an empty mapping."""
        ports: dict[str, int] = {}
        for entry in (self._raw(name) or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            service, has_port, port = (part.strip() for part in entry.partition("="))
            if not has_port or not service:
                self._problems.append(f"{name}: {json.dumps(entry)}: not name=port")
            elif not port.isdigit() or not 0 < int(port) < 65536:
                self._problems.append(f"{name}: {json.dumps(entry)}: not a port")
            elif service in ports:
                self._problems.append(f"{name}: {json.dumps(entry)}: {service} given twice")
            else:
                ports[service] = int(port)
        return ports

    def header_names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated lower-case header names (MESH_PROPAGATE_HEADERS); gRPC's own (`grpc-*`)
        and binary (`*-bin`) headers are refused."""
        raw = self._raw(name)
        if raw is None:
            return default
        names: list[str] = []
        for entry in (entry.strip() for entry in raw.split(",")):
            if not entry:
                continue
            if not HEADER_NAME.fullmatch(entry):
                self._problems.append(f"{name}: {json.dumps(entry)}: not a lower-case header name")
            elif entry.startswith("grpc-") or entry.endswith("-bin"):
                self._problems.append(f"{name}: {json.dumps(entry)}: grpc-* and *-bin headers are not propagated")
            elif entry in names:
                self._problems.append(f"{name}: {json.dumps(entry)}: given twice")
            else:
                names.append(entry)
        return tuple(names)

    def finish(self) -> None:
        """Raise ConfigError naming every bad variable seen so far."""
        if self._problems:
            raise ConfigError(list(self._problems))


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    """What every mesh instance reads; see docs/runtime-contract.md for each variable."""

    service_name: str
    service_version: str
    instance_id: str
    namespace: str
    host: str
    port: int
    admin_port: int
    service_ports: Mapping[str, int]
    call_timeout: float
    propagate_headers: tuple[str, ...]
    data_dir: str
    drain_timeout: float
    log_level: str
    register: bool
    inject_failure_percent: int
    inject_delay_ms: int
    consul_http_addr: str
    consul_token: str = dataclasses.field(repr=False)  # a secret: never in a log line
    xds: bool  # MESH_XDS: off under an Envoy sidecar (plain gRPC, DNS names)
    xds_bootstrap: str  # "" when xds is off and GRPC_XDS_BOOTSTRAP is unset
    otlp_endpoint: str
    traces_exporter: str


def load_instance_config(
    default_service_name: str, environ: Mapping[str, str] | None = None, reader: EnvReader | None = None
) -> InstanceConfig:
    """Parse the contract's variables. Pass `reader` to add a service's own variables before
    calling `reader.finish()` yourself; without it, finish() is called here."""
    env = os.environ if environ is None else environ
    r = reader or EnvReader(env)
    name = r.string("OTEL_SERVICE_NAME", default_service_name)
    xds = r.boolean("MESH_XDS", True)
    config = InstanceConfig(
        service_name=name,
        service_version=r.string("MESH_SERVICE_VERSION", "v1"),
        instance_id=r.string("MESH_INSTANCE_ID", f"{name}-{os.getpid()}"),
        namespace=r.string("MESH_NAMESPACE", "default"),
        host=r.string("MESH_HOST", "127.0.0.1"),
        port=r.integer("MESH_PORT", 0, minimum=0, maximum=65535),
        admin_port=r.integer("MESH_ADMIN_PORT", 0, minimum=0, maximum=65535),
        service_ports=types.MappingProxyType(r.service_ports("MESH_SERVICE_PORTS")),
        call_timeout=r.seconds("MESH_CALL_TIMEOUT", 5.0),
        propagate_headers=r.header_names("MESH_PROPAGATE_HEADERS", ("x-user-tier",)),
        data_dir=r.string("MESH_DATA_DIR", "data"),
        drain_timeout=r.seconds("MESH_DRAIN_TIMEOUT", 5.0),
        log_level=r.string("MESH_LOG_LEVEL", "info", choices=LOG_LEVELS),
        register=r.boolean("MESH_REGISTER", True),
        inject_failure_percent=r.integer("MESH_INJECT_FAILURE_PERCENT", 0, minimum=0, maximum=100),
        inject_delay_ms=r.integer("MESH_INJECT_DELAY_MS", 0, minimum=0, maximum=MAX_INJECT_DELAY_MS),
        consul_http_addr=r.string("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
        consul_token=r.consul_token(),
        xds=xds,
        xds_bootstrap=r.required("GRPC_XDS_BOOTSTRAP") if xds else r.string("GRPC_XDS_BOOTSTRAP", ""),
        otlp_endpoint=r.string("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        traces_exporter=r.string("OTEL_TRACES_EXPORTER", "otlp", choices=("otlp", "none")),
    )
    if reader is None:
        r.finish()
    return config
