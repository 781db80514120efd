"""No private key or token in the run folder is readable by group or others, and no secret leaks
into a log, the state file or a process's environment."""

from __future__ import annotations

import json
import pathlib
import stat

from mesh.runner import consul_acl, topology


def _secret_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every file that holds a secret: tokens, private keys (not public ones), the agent's ACL config."""
    def secret(path: pathlib.Path) -> bool:
        name = path.name.lower()
        return (name.endswith(".token") or name == consul_acl.config_path(run_dir).name
                or ("key" in name and "pub" not in name and not name.startswith(".")))
    return sorted(path for path in run_dir.rglob("*") if path.is_file() and secret(path))


def test_no_private_key_or_token_file_is_readable_by_group_or_others(mesh):
    files = _secret_files(mesh.run_dir)
    names = {str(path.relative_to(mesh.run_dir)) for path in files}
    services = {s.name for s in topology.SERVICES}
    # the walk sees what it must: every Consul token, the agent's config, the mesh CA's key, workload keys
    assert {f"consul/tokens/{name}.token" for name in {"management", "agent", "control-plane", "read", *services}} <= names
    assert {"consul/acl.json", "ca/ca.key", "auth/signing-key.pem", "certs/catalog-v1/key.pem", "certs/inventory-1/key.pem",
            "certs/pricing-v1/key.pem"} <= names, sorted(names)
    open_to_others = {str(path.relative_to(mesh.run_dir)): oct(stat.S_IMODE(path.stat().st_mode)) for path in files
                      if path.stat().st_mode & 0o077}
    assert open_to_others == {}
    for folder in (mesh.run_dir / "consul", consul_acl.tokens_dir(mesh.run_dir)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_no_consul_token_is_in_a_log_the_state_file_or_a_process_environment(mesh):
    secrets = {path.read_text().strip() for path in consul_acl.tokens_dir(mesh.run_dir).glob("*.token")}
    assert len(secrets) >= 10
    for path in [*(mesh.run_dir / "logs").glob("*.log"), mesh.run_dir / "state.json"]:
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], f"a Consul token in {path}"
    state = json.loads((mesh.run_dir / "state.json").read_text())
    for process in (p for p in state["processes"] if p["pid"]):
        environ = pathlib.Path(f"/proc/{process['pid']}/environ").read_bytes().decode(errors="replace")
        assert not [s for s in secrets if s in environ], f"a Consul token in the environment of {process['name']}"
        if process["service"]:  # it reads its own token's file, and that file only
            expected = f"CONSUL_HTTP_TOKEN_FILE={consul_acl.token_path(mesh.run_dir, process['service'])}"
            assert expected in environ.split("\0"), process["name"]
