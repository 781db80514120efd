"""`meshctl new service`: what it refuses, with a message that says what to do and nothing written
(run in a copy of the repository, tests/support/repo_copy.py), and the parts it is made of. The
whole of it, three languages built and run in a mesh: tests/e2e/test_meshctl_new.py."""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys

import pytest

from mesh.ctl import completion, scaffold
from mesh.runner import topology
from support import repo_copy

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return repo_copy.make(ROOT, tmp_path_factory.mktemp("new-service") / "repo")


def tree(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts}


def new_service(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", "new", "service", *args], cwd=root, env=repo_copy.env(root),
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("name", ["Greeter", "greeter-py", "greeter_py", "g", "1greeter", "grüße", "x" * 31])
def test_a_bad_name_is_refused_with_the_allowed_form(repo: pathlib.Path, name: str) -> None:
    before = tree(repo)
    done = new_service(repo, name, "--lang", "python")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"meshctl new service: {name!r} is not a service name: use {scaffold.NAME_FORM}\n"
    assert tree(repo) == before


@pytest.mark.parametrize("name", ["read", "meshctl", "consul", "import"])
def test_a_name_the_mesh_uses_is_refused(repo: pathlib.Path, name: str) -> None:
    before = tree(repo)
    done = new_service(repo, name, "--lang", "go")
    assert done.returncode == 2 and "is reserved" in done.stderr, done.stderr
    assert tree(repo) == before


def test_an_existing_service_is_refused_and_nothing_written(repo: pathlib.Path) -> None:
    before = tree(repo)
    done = new_service(repo, "catalog", "--lang", "ts")
    assert done.returncode == 2
    assert done.stderr == ("meshctl new service: service 'catalog' already exists in mesh/runner/topology.py: "
                           "nothing written\n")
    assert tree(repo) == before


def test_a_folder_that_is_there_already_is_refused_too(repo: pathlib.Path) -> None:
    (repo / "istio" / "leftover.yaml").write_text("# a file of an earlier attempt\n")
    try:
        before = tree(repo)
        done = new_service(repo, "leftover", "--lang", "python")
        assert done.returncode == 2
        assert "service 'leftover' already exists (istio/leftover.yaml): nothing written" in done.stderr, done.stderr
        assert tree(repo) == before
    finally:
        (repo / "istio" / "leftover.yaml").unlink()


@pytest.mark.parametrize("lang, hint", [("pyton", " (did you mean python?)"), ("golang2", " (did you mean go?)"),
                                        ("tsx", " (did you mean ts?)"), ("typescrpt", " (did you mean ts?)"),
                                        ("cobol", "")])
def test_an_unknown_language_gets_the_closest_one(repo: pathlib.Path, lang: str, hint: str) -> None:
    before = tree(repo)
    done = new_service(repo, "greeter", "--lang", lang)
    assert done.returncode == 2
    assert done.stderr == f"meshctl new service: unknown language {lang!r}{hint}: --lang is one of python, go, ts\n"
    assert tree(repo) == before


def test_the_languages_and_their_aliases() -> None:
    assert [scaffold.check_lang(lang) for lang in ("python", "py", "go", "golang", "ts", "typescript")] == \
        ["python", "python", "go", "go", "ts", "ts"]


def test_the_next_ports_follow_the_series_of_the_topology() -> None:
    grpc_ports = [s.port for s in topology.SERVICES if s.protocol == "grpc"]
    port, admin = scaffold.next_ports(topology.SERVICES)
    assert (port, admin) == (max(grpc_ports) + 10, max(grpc_ports) + 10 - 31000)
    catalog = next(s for s in topology.SERVICES if s.name == "catalog")
    assert catalog.instances[0].admin_port - catalog.port == admin - port  # 50051 / 19051
    taken = (*topology.SERVICES, topology.Service("x", "go", port, (topology.Instance("x-1", "v1", port, admin),)))
    assert scaffold.next_ports(taken) == (port + 10, admin + 10)


def test_the_plan_writes_a_sibling_of_each_language_and_nothing_else(repo: pathlib.Path) -> None:
    files = {lang: set(scaffold.plan(repo, "greeter", lang, topology.SERVICES).files) for lang in scaffold.LANGUAGES}
    common = {"protos/shop/greeter/v1/greeter.proto", "istio/greeter.yaml", "services/greeter/Dockerfile"}
    assert files["python"] == common | {"services/greeter/__init__.py", "services/greeter/__main__.py",
                                        "services/greeter/servicer.py", "tests/unit/test_greeter.py"}
    assert files["go"] == common | {"services/greeter/README.md", "services/greeter/go.mod", "services/greeter/go.sum",
                                    "services/greeter/cmd/greeter/main.go", "services/greeter/internal/server/server.go",
                                    "services/greeter/internal/server/server_test.go"}
    assert files["ts"] == common | {"services/greeter/README.md", "services/greeter/package.json",
                                    "services/greeter/tsconfig.json", "services/greeter/src/main.ts",
                                    "services/greeter/src/greeter/setup.ts", "services/greeter/src/greeter/service.ts",
                                    "services/greeter/src/greeter/service.test.ts"}
    for lang in scaffold.LANGUAGES:
        for text in scaffold.plan(repo, "greeter", lang, topology.SERVICES).files.values():
            assert "{{" not in text.replace("{{Field", ""), text[:200]  # every placeholder filled


def test_a_template_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"\{\{port\}\}"):
        scaffold.render("MESH_PORT={{port}}", {"name": "greeter"})


def test_the_topology_entry_goes_above_the_marker() -> None:
    text = "SERVICES = (\n    Service(...),\n    " + scaffold.TOPOLOGY_MARKER + "\n)\n"
    p = scaffold.Plan("greeter", "go", 50101, 19101, {})
    edited = scaffold._insert_before_line(text, scaffold.TOPOLOGY_MARKER, scaffold.topology_entry(p))
    assert edited == ('SERVICES = (\n    Service(...),\n    Service("greeter", "go", 50101, (Instance("greeter-v1", '
                      '"v1", 50101, 19101),)),\n    ' + scaffold.TOPOLOGY_MARKER + "\n)\n")
    assert scaffold.topology_source(ROOT).count(scaffold.TOPOLOGY_MARKER) == 1


def test_completion_knows_the_new_subcommand_and_its_languages() -> None:
    bash = completion.script("bash")
    assert "new completion" in bash and 'new) words="service" ;;' in bash
    assert '--lang) COMPREPLY=($(compgen -W "python go ts" -- "$cur")); return ;;' in bash
