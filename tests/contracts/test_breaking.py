"""`make breaking` (tools/proto/breaking.py, with the pinned buf) on real edits of our contracts: a copy of protos/
committed on `main` in a repository of the test's own, then edited in the working tree (the case of a branch that IS
main with uncommitted changes) or committed on another branch."""

from __future__ import annotations

import json
import pathlib
import runpy
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "proto" / "node_modules" / ".bin" / "buf"
SCRIPT = ROOT / "tools" / "proto" / "breaking.py"
FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "buf_breaking"
CATALOG = "protos/shop/catalog/v1/catalog.proto"
PRICING = "protos/shop/pricing/v1/pricing.proto"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def _git(repo: pathlib.Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True)


def _repository(path: pathlib.Path, branch: str = "main") -> pathlib.Path:
    """buf's workspace (buf.yaml, our protos, the vendored modules it names) committed on `branch`."""
    if not BUF.exists():
        pytest.fail("buf is not installed: run `make tools` (make test does)")
    path.mkdir()
    shutil.copy(ROOT / "buf.yaml", path / "buf.yaml")
    shutil.copytree(ROOT / "protos", path / "protos")
    shutil.copytree(ROOT / "third_party", path / "third_party")
    _git(path, "init", "--quiet", f"--initial-branch={branch}")
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "--message", "the contracts")
    return path


@pytest.fixture
def repo(tmp_path) -> pathlib.Path:
    return _repository(tmp_path / "repo")


def _edit(repo: pathlib.Path, name: str, old: str, new: str) -> None:
    path = repo / name
    text = path.read_text()
    assert text.count(old) == 1, f"{name} no longer has {old!r}: update this test"
    path.write_text(text.replace(old, new))


def _line(repo: pathlib.Path, name: str, text: str) -> int:
    return next(n for n, line in enumerate((repo / name).read_text().splitlines(), 1) if text in line)


def _make_breaking(repo: pathlib.Path) -> tuple[int, str]:
    """What `make breaking` runs, in the repository (its output flowed into one line per finding block)."""
    run = subprocess.run([sys.executable, str(SCRIPT)], cwd=repo, capture_output=True, text=True, timeout=120,
                         check=False)
    assert not run.stderr, run.stderr
    return run.returncode, run.stdout


def _flowing(text: str) -> str:
    return " ".join(text.split())


def test_a_deleted_field(repo):
    _edit(repo, CATALOG, "  // One-line description.\n  string description = 3;\n", "")
    code, out = _make_breaking(repo)
    assert code == 1, out
    assert f"{CATALOG}:{_line(repo, CATALOG, 'message Product {')}: FIELD_NO_DELETE" in out
    said = _flowing(out)
    assert "Peers built from main still send field 3 (description) of Product" in said
    assert "silently lost" in said
    assert "mark it `[deprecated = true]`" in said and "shop.catalog.v2" in said
    assert '`reserved 3; reserved "description";` in Product' in said
    assert out.rstrip().endswith("1 breaking change against main")


def test_a_field_that_changed_type(repo):
    _edit(repo, CATALOG, "int32 page_size = 1;", "int64 page_size = 1;")
    code, out = _make_breaking(repo)
    assert code == 1, out
    assert f"{CATALOG}:{_line(repo, CATALOG, 'int64 page_size = 1;')}: FIELD_SAME_TYPE" in out
    said = _flowing(out)
    assert "Field 1 (page_size) of ListProductsRequest changed type from int32 to int64" in said
    assert "add the new shape as a NEW field with the next free number in ListProductsRequest" in said


def test_a_deleted_rpc(repo):
    _edit(repo, CATALOG, "  rpc BatchGetProducts(BatchGetProductsRequest) returns (BatchGetProductsResponse);\n", "")
    code, out = _make_breaking(repo)
    assert code == 1, out
    assert f"{CATALOG}:{_line(repo, CATALOG, 'service CatalogService {')}: RPC_NO_DELETE" in out
    said = _flowing(out)
    assert "Callers built from main still call /shop.catalog.v1.CatalogService/BatchGetProducts" in said
    assert "UNIMPLEMENTED" in said
    assert "Put the RPC back with `option deprecated = true;`" in said
    assert "new version package, shop.catalog.v2, served beside shop.catalog.v1" in said


def test_a_renamed_package(repo):
    _edit(repo, PRICING, "package shop.pricing.v1;", "package shop.pricing.v2;")
    code, out = _make_breaking(repo)
    assert code == 1, out
    assert f"{PRICING}:{_line(repo, PRICING, 'package shop.pricing.v2;')}: FILE_SAME_PACKAGE" in out
    said = _flowing(out)
    assert "The package changed from shop.pricing.v1 to shop.pricing.v2" in said
    assert "callers built from main get UNIMPLEMENTED" in said
    assert "put the new package in its own (protos/shop/pricing/v2/) as a new version, served beside" in said


def test_compatible_additions_pass(repo):
    """A field with a new number and an RPC with its own messages: nothing breaks."""
    _edit(repo, CATALOG, "  google.type.Money price_usd = 4;\n",
          "  google.type.Money price_usd = 4;\n  // Brand shown beside the name.\n  string brand = 5;\n")
    _edit(repo, CATALOG, "  rpc BatchGetProducts(BatchGetProductsRequest) returns (BatchGetProductsResponse);\n",
          "  rpc BatchGetProducts(BatchGetProductsRequest) returns (BatchGetProductsResponse);\n"
          "  // CountProducts returns how many products there are.\n"
          "  rpc CountProducts(CountProductsRequest) returns (CountProductsResponse);\n")
    (repo / CATALOG).write_text((repo / CATALOG).read_text() + (
        "\n// CountProductsRequest is empty.\nmessage CountProductsRequest {}\n\n"
        "// CountProductsResponse holds the count.\nmessage CountProductsResponse {\n"
        "  // How many products.\n  int32 count = 1;\n}\n"))
    code, out = _make_breaking(repo)
    assert (code, out.splitlines()[-1]) == (0, "no breaking changes against main"), out


def test_a_branch_is_compared_with_main_s_commit(repo):
    _git(repo, "switch", "--quiet", "--create", "feature")
    _edit(repo, CATALOG, "  // One-line description.\n  string description = 3;\n", "")
    _git(repo, "commit", "--quiet", "--all", "--message", "drop the description")
    code, out = _make_breaking(repo)
    assert code == 1 and "FIELD_NO_DELETE" in out, out


def test_main_itself_once_the_change_is_committed_there(repo):
    """Committed on main, the change is main: nothing left to compare (the check guards branches and edits)."""
    _edit(repo, CATALOG, "int32 page_size = 1;", "int64 page_size = 1;")
    _git(repo, "commit", "--quiet", "--all", "--message", "page_size is int64")
    assert _make_breaking(repo)[0] == 0


def test_no_main_branch_skips(tmp_path):
    """A fresh clone whose default branch is another, and a tarball (no .git): said, and skipped."""
    trunk = _repository(tmp_path / "trunk", branch="trunk")
    tarball = tmp_path / "tarball"
    shutil.copytree(trunk, tarball, ignore=shutil.ignore_patterns(".git"))
    for repo in (trunk, tarball):
        _edit(repo, CATALOG, "int32 page_size = 1;", "int64 page_size = 1;")
        assert _make_breaking(repo) == (0, "no main branch here: breaking check skipped\n")


def test_a_proto_that_does_not_compile(repo):
    (repo / CATALOG).write_text((repo / CATALOG).read_text() + "garbage here\n")
    code, out = _make_breaking(repo)
    assert code == 1
    assert f"{CATALOG}:" in out and ": COMPILE" in out
    assert out.rstrip().endswith("protos/ does not compile: fix it, then run make breaking again")


def test_every_rule_buf_applies_to_protos_has_plain_words():
    """buf's own list of the rules buf.yaml configures for protos/ (FILE): an upgrade that adds one fails here."""
    listed = subprocess.run([str(BUF), "config", "ls-breaking-rules", "--configured-only", "--module-path", "protos",
                             "--format", "json"], cwd=ROOT, check=True, capture_output=True, text=True)
    rules = {json.loads(line)["id"] for line in listed.stdout.splitlines()}
    assert len(rules) > 40
    explained = runpy.run_path(str(SCRIPT))["EXPLANATIONS"]  # tools/proto is no package
    assert not sorted(rules - explained.keys())


def test_the_recorded_findings_are_what_buf_says_today(tmp_path):
    """tests/unit's recording of buf's JSON (findings.jsonl) is buf's real output for its main/ and edited/ protos."""
    repo = tmp_path / "demo"
    demo = repo / "protos" / "shop" / "demo" / "v1"
    demo.mkdir(parents=True)
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "third_party", repo / "third_party")
    for name in ("demo.proto", "gone.proto"):
        shutil.copy(FIXTURES / "main" / name, demo / name)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "--message", "before")
    (demo / "gone.proto").unlink()
    shutil.copy(FIXTURES / "edited" / "demo.proto", demo / "demo.proto")
    run = subprocess.run([str(BUF), "breaking", "protos", "--against", ".git#branch=main,subdir=protos",
                          "--error-format", "json"], cwd=repo, capture_output=True, text=True, check=False)
    assert run.returncode == 100, run.stderr
    assert run.stdout == (FIXTURES / "findings.jsonl").read_text()
