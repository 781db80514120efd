"""The runner's Consul ACL files and token plan (mesh/runner/consul_acl.py); the tokens' effect on a
real agent is proven end to end (tests/e2e/test_consul_acl.py)."""

import json
import stat
import uuid

from mesh.runner import consul_acl, topology

SERVICES = [s.name for s in topology.SERVICES]


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_token_is_made_once_private_and_reused(tmp_path):
    tokens = consul_acl.prepare(tmp_path, SERVICES)
    assert set(tokens) == {"management", "agent", "control-plane", "read", *SERVICES}
    assert len(set(tokens.values())) == len(tokens)  # no secret shared
    for name, secret in tokens.items():
        path = consul_acl.token_path(tmp_path, name)
        assert str(uuid.UUID(secret)) == secret and path.read_text().strip() == secret
        assert _mode(path) == 0o600
    assert _mode(consul_acl.tokens_dir(tmp_path)) == _mode(tmp_path / "consul") == 0o700
    assert consul_acl.prepare(tmp_path, SERVICES) == tokens  # a second `make up` keeps them


def test_a_token_file_made_readable_is_private_again_and_a_broken_one_replaced(tmp_path):
    tokens = consul_acl.prepare(tmp_path, SERVICES)
    consul_acl.token_path(tmp_path, "payments").chmod(0o644)
    consul_acl.token_path(tmp_path, "orders").write_text("not a uuid\n")
    again = consul_acl.prepare(tmp_path, SERVICES)
    assert _mode(consul_acl.token_path(tmp_path, "payments")) == 0o600
    assert again["payments"] == tokens["payments"] and again["orders"] != tokens["orders"]


def test_the_agent_config_holds_default_deny_and_its_two_secrets_privately(tmp_path):
    tokens = consul_acl.prepare(tmp_path, SERVICES)
    path = consul_acl.config_path(tmp_path)
    acl = json.loads(path.read_text())["acl"]
    assert (acl["enabled"], acl["default_policy"]) == (True, "deny")
    assert acl["tokens"] == {"initial_management": tokens["management"], "agent": tokens["agent"]}
    assert _mode(path) == 0o600


def test_each_service_token_is_its_service_identity_and_the_readers_read_only(tmp_path):
    tokens = consul_acl.prepare(tmp_path, SERVICES)
    bodies = {body["SecretID"]: body for body in consul_acl.token_bodies(tokens, SERVICES, "polymesh")}
    assert tokens["management"] not in bodies  # made by Consul itself from the config
    for service in SERVICES:
        body = bodies[tokens[service]]
        assert body["ServiceIdentities"] == [{"ServiceName": service}] and "Policies" not in body
    for reader in ("control-plane", "read"):
        assert bodies[tokens[reader]]["Policies"] == [{"Name": consul_acl.READ_POLICY}]
    assert bodies[tokens["agent"]]["NodeIdentities"] == [{"NodeName": "polymesh", "Datacenter": "dc1"}]
    assert consul_acl.READ_RULES.count('policy = "read"') == 2 and "write" not in consul_acl.READ_RULES
    assert len({body["AccessorID"] for body in bodies.values()}) == len(bodies)


def test_instances_and_the_control_plane_get_the_path_of_their_token_never_the_secret(tmp_path):
    tokens = consul_acl.prepare(tmp_path, SERVICES)
    for process in topology.build(tmp_path):
        if process.name in ("consul", "jaeger"):
            continue
        owner = process.service or "control-plane"
        assert process.env["CONSUL_HTTP_TOKEN_FILE"] == str(consul_acl.token_path(tmp_path, owner))
        assert process.env["CONSUL_HTTP_TOKEN"] == ""  # one from the developer's shell does not leak in
        assert not set(tokens.values()) & set(process.env.values())
