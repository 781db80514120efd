"""The README's walkthroughs, run as written (README "Walkthroughs"): every ```sh block tagged
`walkthrough=NAME`, in the README's order, in one copy of the repository (tests/support/repo_copy.py:
the working tree as it is, committed there as `main`),
each block as one `bash -eo pipefail` script from the copy's root. The only change: the gateway's
port moves by the test mesh's MESH_PORT_OFFSET (MESH_RUN_DIR and MESH_PORT_OFFSET are in the
environment, as for a second mesh beside a developer's). Each test checks what a reader would look
for in the output; the transcripts are kept in .run/walkthroughs/NAME.txt."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
from collections.abc import Iterator

import pytest

from mesh.runner import topology
from mesh.runner.cli import ports_in_use
from support import repo_copy

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRANSCRIPTS = ROOT / ".run" / "walkthroughs"
OFFSETS = (6000, 7000, 5000)  # not the e2e mesh's (tests/e2e/conftest.py): both may run at once
BLOCK = re.compile(r"^```sh walkthrough=(?P<name>[a-z0-9-]+)\n(?P<body>.*?)^```$", re.M | re.S)

pytestmark = pytest.mark.e2e


def walkthroughs() -> dict[str, str]:
    found = {m["name"]: m["body"] for m in BLOCK.finditer((ROOT / "README.md").read_text())}
    assert found, "README.md has no ```sh walkthrough=NAME block"
    return found


@dataclasses.dataclass
class Copy:
    root: pathlib.Path
    env: dict[str, str]
    offset: int
    ran: list[str] = dataclasses.field(default_factory=list)

    def run(self, name: str, timeout: float = 300) -> str:
        """Run walkthrough `name` as written (the gateway's port moved); return what it printed."""
        script = walkthroughs()[name].replace("localhost:8080", f"localhost:{topology.Ports(self.offset).gateway}")
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        self.ran.append(name)
        transcript = f"$ # walkthrough {name} (exit {done.returncode})\n{script}\n--- output ---\n{done.stdout}{done.stderr}"
        TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
        (TRANSCRIPTS / f"{name}.txt").write_text(transcript)
        assert done.returncode == 0, f"walkthrough {name} failed:\n{transcript[-6000:]}"
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Copy]:
    # the copy links the venv: its `make up` must not reinstall it (it would install the copy)
    stale = subprocess.run(["make", "-q", ".venv/.installed", "tools/proto/node_modules/.installed"], cwd=ROOT)
    if stale.returncode != 0:
        pytest.fail("the venv or buf is older than its inputs here: `make tools` first (make test does)")
    root = repo_copy.make(ROOT, tmp_path_factory.mktemp("walkthrough") / "polymesh", node_modules=True)
    repo_copy.commit_as_main(root)
    run_dir = root / ".run"
    offset = next((o for o in OFFSETS if not ports_in_use(run_dir, o)), None)
    if offset is None:
        pytest.fail(f"no free port layout among offsets {OFFSETS}")
    env = repo_copy.env(root, MESH_RUN_DIR=str(run_dir), MESH_PORT_OFFSET=str(offset))  # the default mesh's
    copy = Copy(root, env, offset)
    yield copy
    subprocess.run(["make", "down"], cwd=root, env=env, capture_output=True, timeout=120)


def test_the_first_five_minutes(copy: Copy) -> None:
    out = copy.run("first-five-minutes")
    instances = [i.name for s in topology.SERVICES for i in s.instances]
    # the instance tables (make up, make status, meshctl status): NAME SERVICE LANGUAGE VERSION ADDRESS ... HEALTH
    status = [row for row in map(str.split, out.splitlines())
              if len(row) >= 9 and row[0] in instances and re.fullmatch(r"[\d.]+:\d+", row[4])]
    unhealthy = [row for row in status if row[-1] != "passing"]
    assert {row[0] for row in status} == set(instances), f"instances in the tables: {sorted({r[0] for r in status})}"
    assert not unhealthy, f"not passing: {unhealthy}"
    assert '"products"' in out and '"pricingVersion"' in out
    assert re.search(r'"status": *"ORDER_STATUS_CONFIRMED"', out), f"no confirmed order in:\n{out[-3000:]}"
    assert "control plane: no policy errors" in out


def test_change_a_proto(copy: Copy) -> None:
    out = copy.run("change-a-proto", timeout=240)
    changed = {line.split()[-1] for line in out.splitlines() if re.match(r"^ ?M gen/", line)}
    for language in ("gen/python/shop/catalog", "gen/go/shop/catalog", "gen/ts/shop/catalog"):
        assert any(path.startswith(language) for path in changed), f"no change under {language}: {sorted(changed)}"
    assert "no breaking changes against main" in out
    assert "FIELD_NO_DELETE" in out and 'reserved 3; reserved "description";' in out
    assert "make breaking refused it (exit 1)" in out or "make breaking refused it (exit 2)" in out
    left = subprocess.run(["git", "status", "--short", "protos", "gen"], cwd=copy.root, capture_output=True, text=True)
    assert left.stdout == "", f"the walkthrough's undo left changes: {left.stdout}"


def test_canary_in_sixty_seconds(copy: Copy) -> None:
    if "first-five-minutes" not in copy.ran:
        pytest.skip("needs the mesh the first walkthrough starts")
    out = copy.run("canary")
    # `uniq -c` lines: first the 200 calls at 90/10, then the 50 after promotion
    phases: list[dict[str, int]] = [{}, {}]
    for count, version in re.findall(r'^\s*(\d+) "pricingVersion": *"(v[12])"', out, re.M):
        phase = phases[0] if sum(phases[0].values()) < 200 else phases[1]
        phase[version] = int(count)
    canary, promoted = phases
    assert "[canary]" in out, "the route never showed in meshctl routes"
    assert sum(canary.values()) == 200 and 150 <= canary.get("v1", 0) <= 196, f"90/10 over 200 calls gave {canary}"
    assert promoted == {"v2": 50}, f"after promotion: {promoted}"
    assert not (copy.root / "istio" / "pricing-rollout.yaml").exists()


def test_follow_one_request(copy: Copy) -> None:
    if "first-five-minutes" not in copy.ran:
        pytest.skip("needs the mesh the first walkthrough starts")
    out = copy.run("follow-one-request")
    for mark in ("gateway[py]", "orders[py]", "pricing[ts]", "inventory[go]", "payments[py]", "catalog[py]"):
        assert mark in out, f"{mark} missing from the waterfall:\n{out[-4000:]}"
    page = copy.root / "trace.html"
    assert page.exists() and re.search(r"trace.html: \d+ spans of trace [0-9a-f]{32}", out)
    assert "gateway" in page.read_text()
