"""README "Add a service": `meshctl new service NAME --lang python|go|ts` in a copy of the repository
(tests/support/repo_copy.py: the working tree as it is), one service of each language; then in that
copy, as a developer would without editing anything: the build, each new service's own test, the
checks of the generated files (compose, Kubernetes, buf, the topology-driven unit tests), the whole
mesh up with the runner, each new service called through the mesh with `meshctl call` (a greeting;
INVALID_ARGUMENT with a BadRequest naming the field), `meshctl status` healthy, and `down`."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from support import repo_copy
from support.poll import poll_until
from support.reports import add_failure_report

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFSETS = (1000, 2000, 3000, 4000)  # as the e2e mesh fixture: the first whose ports are free
NEW = {"greeterpy": "python", "greetergo": "go", "greeterts": "ts"}
LANGUAGE = {"python": "python", "go": "go", "ts": "typescript"}
# The suites of `make test` that read the topology, istio/ or the generated files without a running
# mesh: they must pass in the copy as they are (the Kubernetes one on a real API server).
# what a new service's entries could break (the rest of make test does not read the topology's
# service list): the generated compose file, Kubernetes manifests, istio/ files and Dockerfiles, the
# generated code, istioctl on istio/, and both overlays applied to a real API server
SUITES = ("tests/unit/test_compose_file.py", "tests/unit/test_kube_manifests.py", "tests/unit/test_scenario_files.py",
          "tests/unit/test_dockerfiles.py", "tests/unit/test_runner_consul_acl.py",
          "tests/contracts/test_generated_code.py", "tests/istio", "tests/kubernetes")

pytestmark = pytest.mark.e2e
timings: dict[str, float] = {}


def run(root: pathlib.Path, *command: str, cwd: pathlib.Path | None = None, timeout: float = 300,
        **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=cwd or root, env=repo_copy.env(root, **env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done.stdout


def meshctl(root: pathlib.Path, mesh_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(root, sys.executable, "-m", "mesh", *args, timeout=60, **mesh_env)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The copy with the three new services, built."""
    started = time.monotonic()
    root = repo_copy.make(ROOT, tmp_path_factory.mktemp("scaffold") / "repo")
    # a git history of its own: buf's breaking check compares with its main, and the unit tests ask
    # git which istio/ files are tracked
    repo_copy.commit_as_main(root)
    for name, lang in NEW.items():
        done = run(root, sys.executable, "-m", "mesh", "new", "service", name, "--lang", lang)
        out = ok(done)
        assert f"new {LANGUAGE[lang]} service {name}" in out and f"meshctl call {name}/Greet" in out, out
        assert f"protos/shop/{name}/v1/{name}.proto" in out and "make up" in out, out
    timings["scaffold"] = time.monotonic() - started
    ok(run(root, "git", "add", "-A"))  # as a developer commits them (the unit tests read git's list)
    started = time.monotonic()
    ok(run(root, "make", "-s", *repo_copy.MAKE_SHARED, "build"))
    timings["build"] = time.monotonic() - started
    return root


def test_each_new_service_is_in_the_topology_istio_and_the_generated_files(repo: pathlib.Path) -> None:
    services = json.loads(ok(run(repo, sys.executable, "-c", "import json; from mesh.runner import topology; "
                                 "print(json.dumps({s.name: [s.language, s.port, [[i.name, i.version, i.port, "
                                 "i.admin_port] for i in s.instances]] for s in topology.SERVICES}))")))
    ports = [services[name][1] for name in NEW]
    assert ports == [50101, 50111, 50121], services  # the next free ports after orders' 50091, in order
    for (name, lang), port in zip(NEW.items(), ports, strict=True):
        assert services[name] == [LANGUAGE[lang], port, [[f"{name}-v1", "v1", port, port - 31000]]]
        assert f"host: {name}.default.svc.cluster.local" in (repo / "istio" / f"{name}.yaml").read_text()
        assert f"  name: {name}\n" in (repo / "istio" / "security.yaml").read_text()
        assert (repo / "kubernetes" / "base" / f"{name}.yaml").exists()
        assert f"  {name}-v1:\n" in (repo / "docker-compose.yml").read_text()
        for generated in (f"gen/python/shop/{name}/v1/{name}_pb2_grpc.py", f"gen/go/shop/{name}/v1/{name}_grpc.pb.go",
                          f"gen/ts/shop/{name}/v1/{name}.ts"):
            assert (repo / generated).exists(), generated
    images = ok(run(repo, "tools/docker/build-images", "--list", PYTHON=sys.executable))
    assert {f"{name} services/{name}/Dockerfile" for name in NEW} <= set(images.splitlines())
    ok(run(repo, sys.executable, "-m", "mesh.runner", "compose", "--check"))
    ok(run(repo, sys.executable, "-m", "mesh.runner", "kube", "--check"))
    ok(run(repo, "make", "-s", *repo_copy.MAKE_SHARED, "lint", "breaking"))  # ruff, mypy, vet, tsc; against its main
    started = time.monotonic()
    ok(run(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES))
    timings["the suites that read the topology"] = time.monotonic() - started


def test_each_new_service_passes_its_own_test(repo: pathlib.Path) -> None:
    started = time.monotonic()
    out = ok(run(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_greeterpy.py"))
    assert "3 passed" in out, out
    out = ok(run(repo, "bash", "-c", "go vet ./... && go test -count=1 ./...", cwd=repo / "services" / "greetergo"))
    assert "ok  \tpolymesh.local/services/greetergo/internal/server" in out, out
    out = ok(run(repo, "npm", "test", "--workspace", "services/greeterts"))
    assert "# pass 3" in out and "# fail 0" in out, out
    timings["own tests"] = time.monotonic() - started


@pytest.fixture(scope="module")
def mesh_env(repo: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The copy's whole mesh, up with the runner on free ports, down at the end."""
    run_dir = tmp_path_factory.mktemp("scaffold-run")
    started = time.monotonic()
    for offset in OFFSETS:
        env = {"MESH_RUN_DIR": str(run_dir), "MESH_PORT_OFFSET": str(offset)}
        up = run(repo, sys.executable, "-m", "mesh.runner", "up", timeout=240, **env)
        if "ports already in use" not in up.stderr:  # taken: try the next layout, as the e2e fixture does
            break
    try:
        ok(up)
        timings["up"] = time.monotonic() - started
        yield env
    finally:
        down = run(repo, sys.executable, "-m", "mesh.runner", "down", timeout=120, **env)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(autouse=True)
def _logs_of_the_new_instances(request: pytest.FixtureRequest) -> None:
    if "mesh_env" not in request.fixturenames:
        return
    run_dir = pathlib.Path(request.getfixturevalue("mesh_env")["MESH_RUN_DIR"])

    def tails() -> str:
        return "\n".join(f"----- {name}-v1 -----\n" + "\n".join(
            (run_dir / "logs" / f"{name}-v1.log").read_text(errors="replace").splitlines()[-25:])
            for name in NEW if (run_dir / "logs" / f"{name}-v1.log").exists())
    add_failure_report(request, tails)


@pytest.mark.parametrize("name", NEW)
def test_meshctl_calls_the_new_service_through_the_mesh(repo: pathlib.Path, mesh_env: dict[str, str], name: str) -> None:
    done = meshctl(repo, mesh_env, "call", f"{name}/Greet", '{"name": "Ada"}')
    reply = ok(done)
    assert json.loads(reply.split("\n\n")[0]) == {"message": "Hello, Ada!", "version": "v1"}, reply
    assert f"instance {name}-v1 (as meshctl)" in reply + done.stderr

    refused = meshctl(repo, mesh_env, "call", f"{name}/Greet", "{}")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error = json.loads(refused.stdout.split("\n\n")[0])
    assert error["code"] == "INVALID_ARGUMENT" and error["message"] == "invalid request: name: required", error
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                 "fieldViolations": [{"field": "name", "description": "required"}]}], error


def test_meshctl_status_shows_every_new_instance_healthy(repo: pathlib.Path, mesh_env: dict[str, str]) -> None:
    def healthy() -> str | None:
        done = meshctl(repo, mesh_env, "status")
        return done.stdout if done.returncode == 0 else None
    out = poll_until(healthy, 30, 0.5, "meshctl status exits 0 in the copy")
    rows = {line.split()[0]: line.split() for line in out.split("\nxDS clients")[0].splitlines()[1:]}
    for name, lang in NEW.items():
        row = rows[f"{name}-v1"]
        assert (row[1], row[2], row[3], row[-1]) == (name, LANGUAGE[lang], "v1", "passing"), row
    assert "control plane: no policy errors" in out
    print(f"\ntimings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}", file=sys.stderr)


def test_the_repository_itself_is_untouched() -> None:
    assert not any((ROOT / "services" / name).exists() or (ROOT / "istio" / f"{name}.yaml").exists() for name in NEW)
