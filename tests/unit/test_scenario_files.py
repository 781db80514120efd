"""The scenarios of istio/scenarios/ as `make scenario` applies them: each folder has its walkthrough
and its entry in mesh/runner/scenarios.py, its files are accepted by our control plane on top of
the defaults, and a copy applied into istio/ can never be committed by accident."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from istio.networking.v1alpha3 import destination_rule_pb2

from mesh.runner import scenarios, topology
from mesh.xds.istio import _State, compile_policy
from mesh.xds.names import ServiceKey

ROOT = Path(__file__).resolve().parents[2]
ISTIO = ROOT / "istio"
FOLDERS = sorted(p.name for p in (ISTIO / "scenarios").iterdir() if p.is_dir())
GRPC_SERVICES = sorted(s.name for s in topology.SERVICES if s.protocol == "grpc")
# istio/ as shipped: every gRPC service's DestinationRule (istio/SERVICE.yaml) and security.yaml
DEFAULTS = tuple(sorted([f"{name}.yaml" for name in GRPC_SERVICES] + ["security.yaml"]))


def test_every_scenario_folder_is_a_make_scenario_with_a_readme():
    assert sorted(scenarios.SCENARIOS) == FOLDERS
    for name in FOLDERS:
        assert (ISTIO / "scenarios" / name / "README.md").exists(), name
        assert sorted(scenarios.SCENARIOS[name].files) == [p.name for p in scenarios.scenario_files(name)], name
        assert scenarios.SCENARIOS[name].measure is not None, name


def test_scenario_file_names_are_unique_and_never_a_default():
    names = [p.name for name in FOLDERS for p in scenarios.scenario_files(name)]
    assert len(names) == len(set(names))
    tracked = subprocess.run(["git", "ls-files", "istio/*.yaml"], cwd=ROOT, capture_output=True, text=True).stdout
    assert sorted(Path(line).name for line in tracked.split() if line.count("/") == 1) == list(DEFAULTS)
    assert not set(names) & set(DEFAULTS)


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("name", FOLDERS)
def test_an_applied_copy_in_istio_is_ignored_by_git(name: str):
    for path in scenarios.scenario_files(name):
        assert _ignored(f"istio/{path.name}"), f"istio/{path.name} is not in .gitignore"
        assert not _ignored(f"istio/scenarios/{name}/{path.name}")
    for default in DEFAULTS:
        assert not _ignored(f"istio/{default}")


@pytest.mark.parametrize("name", FOLDERS)
def test_our_control_plane_takes_each_scenario_on_top_of_the_defaults_without_a_word(name: str):
    """The defaults a scenario does not replace, and the scenario's files: accepted, no warning,
    and still mTLS to every service (a scenario's DestinationRule keeps ISTIO_MUTUAL)."""
    mine = set().union(*(scenarios.resource_keys(p) for p in scenarios.scenario_files(name)))
    kept = [ISTIO / d for d in DEFAULTS if not scenarios.resource_keys(ISTIO / d) & mine]
    policy, rejections, warnings = compile_policy(kept + scenarios.scenario_files(name), "default", _State())
    assert (rejections, warnings) == ({}, [])
    for service in GRPC_SERVICES:
        rule = policy.of(ServiceKey(service, "default")).destination_rule
        assert rule is not None and destination_rule_pb2.ClientTLSSettings.TLSmode.Name(
            rule.traffic_policy.tls.mode) == "ISTIO_MUTUAL", (name, service)


def test_a_scenario_rule_replaces_the_default_of_that_name_until_taken_off(tmp_path: Path):
    for default in DEFAULTS:
        (tmp_path / default).write_text((ISTIO / default).read_text())
    source = ISTIO / "scenarios" / "circuit-breaker"
    applied = tmp_path / "inventory-circuit-breaker.yaml"
    applied.write_text((source / applied.name).read_text())
    scenarios._park_replaced(tmp_path, applied)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(d for d in DEFAULTS if d != "inventory.yaml"), "inventory.yaml.parked", applied.name])
    assert scenarios._unpark(tmp_path) == [tmp_path / "inventory.yaml"]
    assert (tmp_path / "inventory.yaml").read_text() == (ISTIO / "inventory.yaml").read_text()


def test_applied_files_finds_only_scenario_copies(tmp_path: Path):
    for default in DEFAULTS:
        (tmp_path / default).write_text("")
    (tmp_path / "mine.yaml").write_text("")
    (tmp_path / "pricing-canary.yaml").write_text("")
    (tmp_path / "inventory-circuit-breaker.yaml").write_text("")
    assert [p.name for p in scenarios.applied_files(tmp_path)] == ["inventory-circuit-breaker.yaml",
                                                                   "pricing-canary.yaml"]
