"""Consul ACLs for the local mesh: default deny, and a token for everything that talks to Consul.

The runner makes every secret itself (random UUIDs), once per run folder, in
`<run dir>/consul/tokens/NAME.token` (files 0600, folder 0700):

- `management.token`: Consul's `acl.tokens.initial_management` (the agent's config file, 0600);
  the supervisor uses it only to create the tokens below after every start of Consul;
- `agent.token`: the agent's own (`acl.tokens.agent`), a node identity for its node alone;
- `SERVICE.token` for every service of the topology: a service identity (`service "SERVICE"`
  write, read of other services and nodes), so an instance registers and deregisters its own
  service and no other;
- `control-plane.token`: read of every service and node (the catalog and health), nothing else;
- `read.token`: the same read-only rights, for the runner's probes (`make up`, `make status`,
  `make chaos`) and for logging in to the Consul UI.

`consul agent -dev` keeps its ACL state in memory, so a restarted agent knows none of them: the
supervisor calls `bootstrap` after every start, which creates the policy and the tokens again with
the same secrets (Consul accepts a caller's `SecretID`), so nothing that already read its file has
to learn a new one. Instances get the path of their file (`CONSUL_HTTP_TOKEN_FILE`), never the
secret in their environment.
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any

__all__ = [
    "AGENT", "CONTROL_PLANE", "MANAGEMENT", "READ", "READ_POLICY", "READ_RULES", "Unready", "accessor_id", "bootstrap",
    "config_path", "prepare", "read_token", "token_bodies", "token_names", "token_path", "tokens_dir",
]

MANAGEMENT, AGENT, CONTROL_PLANE, READ = "management", "agent", "control-plane", "read"
DATACENTER = "dc1"  # `consul agent -dev`'s
READ_POLICY = "mesh-catalog-read"
# The catalog and health of every service and node: what the control plane watches, what the
# runner's probes and the UI show. No write, no KV, no ACL, no agent endpoints beyond these.
READ_RULES = 'service_prefix "" {\n  policy = "read"\n}\nnode_prefix "" {\n  policy = "read"\n}\n'
TIMEOUT = 2.0


class Unready(Exception):
    """Consul did not (yet) accept the bootstrap: try again."""


def tokens_dir(run_dir: pathlib.Path) -> pathlib.Path:
    return run_dir / "consul" / "tokens"


def token_path(run_dir: pathlib.Path, name: str) -> pathlib.Path:
    return tokens_dir(run_dir) / f"{name}.token"


def config_path(run_dir: pathlib.Path) -> pathlib.Path:
    """The agent's ACL config (`-config-file`): it holds the management and agent secrets, 0600."""
    return run_dir / "consul" / "acl.json"


def read_token(run_dir: pathlib.Path, name: str) -> str:
    """The secret in NAME.token, "" when there is none (a mesh never started in this run folder)."""
    try:
        return token_path(run_dir, name).read_text().strip()
    except OSError:
        return ""


def _private_dir(path: pathlib.Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: pathlib.Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temp.replace(path)


def token_names(services: Iterable[str]) -> tuple[str, ...]:
    """Every token the mesh has: the fixed ones, then one per service."""
    return (MANAGEMENT, AGENT, CONTROL_PLANE, READ, *services)


def prepare(run_dir: pathlib.Path, services: Iterable[str]) -> dict[str, str]:
    """Make the tokens this run folder lacks (keeping the others: a second `make up` reuses them),
    make every token file 0600 and its folders 0700, and write the agent's ACL config. Returns
    name -> secret."""
    _private_dir(run_dir / "consul")
    _private_dir(tokens_dir(run_dir))
    tokens = {}
    for name in token_names(services):
        path = token_path(run_dir, name)
        secret = read_token(run_dir, name)
        if not _is_uuid(secret):
            secret = str(uuid.uuid4())
            _write_private(path, secret + "\n")
        path.chmod(0o600)
        tokens[name] = secret
    config = {"acl": {
        "enabled": True, "default_policy": "deny",
        # the agent answers from its cache while it cannot reach its servers (it is its own server here)
        "down_policy": "extend-cache",
        "tokens": {"initial_management": tokens[MANAGEMENT], "agent": tokens[AGENT]},
    }}
    _write_private(config_path(run_dir), json.dumps(config, indent=2) + "\n")
    return tokens


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def accessor_id(name: str) -> str:
    """A token's AccessorID, derived from its name (accessor ids are not secrets): the bootstrap can
    update the token it made before without asking Consul which one it was."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"polymesh:consul-token:{name}"))


def token_bodies(tokens: dict[str, str], services: Iterable[str], node: str) -> list[dict[str, Any]]:
    """The body of every token but the management one, as `PUT /v1/acl/token` takes it."""
    services = list(services)
    bodies = [
        {"SecretID": tokens[AGENT], "Description": f"polymesh: the agent of node {node}",
         "NodeIdentities": [{"NodeName": node, "Datacenter": DATACENTER}]},
        {"SecretID": tokens[CONTROL_PLANE], "Description": "polymesh: the control plane (catalog and health, read)",
         "Policies": [{"Name": READ_POLICY}]},
        {"SecretID": tokens[READ], "Description": "polymesh: the runner's probes and the UI (catalog and health, read)",
         "Policies": [{"Name": READ_POLICY}]},
    ]
    bodies += [{"SecretID": tokens[service], "Description": f"polymesh: instances of {service}",
                "ServiceIdentities": [{"ServiceName": service}]} for service in services]
    names = (AGENT, CONTROL_PLANE, READ, *services)
    return [{"AccessorID": accessor_id(name), **body} for name, body in zip(names, bodies, strict=True)]


def bootstrap(consul_http: str, tokens: dict[str, str], services: Iterable[str], node: str) -> None:
    """Create (or update) the read policy and every token in the agent at `consul_http`, as the
    management token. Idempotent: safe to repeat after a partial failure. Raises Unready while
    Consul has not made the management token yet (it does once it leads)."""
    api = _Api(consul_http, tokens[MANAGEMENT])
    # Create first (a new agent, the usual case, logs no error); update what a try before made.
    policy = {"Name": READ_POLICY, "Description": "polymesh: the catalog and health, read only", "Rules": READ_RULES}
    if api.call("PUT", "/v1/acl/policy", policy, exists_ok=True) is None:
        existing = api.read(f"/v1/acl/policy/name/{READ_POLICY}")
        api.call("PUT", f"/v1/acl/policy/{existing['ID']}", policy)
    for body in token_bodies(tokens, services, node):
        if api.call("PUT", "/v1/acl/token", body, exists_ok=True) is None:
            made = _Api(consul_http, body["SecretID"]).read("/v1/acl/token/self")
            api.call("PUT", f"/v1/acl/token/{made['AccessorID']}", {**body, "AccessorID": made["AccessorID"]})


class _Api:
    def __init__(self, consul_http: str, token: str) -> None:
        self.base = f"http://{consul_http}"
        self.token = token

    def read(self, path: str) -> dict[str, Any]:
        answer = self.call("GET", path)
        assert answer is not None  # None only with exists_ok
        return answer

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             exists_ok: bool = False) -> dict[str, Any] | None:
        """The answer; None when `exists_ok` and Consul says it has that policy or token already."""
        request = urllib.request.Request(
            self.base + path, method=method, headers={"X-Consul-Token": self.token},
            data=None if body is None else json.dumps(body).encode(),
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                answer: dict[str, Any] = json.load(reply)
                return answer
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace").strip()
            if exists_ok and ("already exists" in text or "already in use" in text):  # Consul says 500
                return None
            raise Unready(f"{method} {path}: {error.code} {text}") from None
        except (OSError, ValueError) as error:
            raise Unready(f"{method} {path}: {error}") from None
