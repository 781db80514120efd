"""The generated code in gen/ is what `make proto` makes from protos/ (and third_party/istio-api) today."""

from __future__ import annotations

import filecmp
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "proto" / "node_modules" / ".bin" / "buf"
HAND_WRITTEN = {"go.mod", "go.sum"}
TEMPLATES = ("buf.gen.yaml", "buf.gen.ts-rpc.yaml", "buf.gen.istio.yaml")


def _files(base: pathlib.Path) -> set[str]:
    return {
        str(p.relative_to(base)) for p in base.rglob("*")
        if p.is_file() and p.name not in HAND_WRITTEN and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> pathlib.Path:
    if not BUF.exists():
        pytest.fail("buf is not installed: run `make tools` (make test does)")
    out = tmp_path_factory.mktemp("gen")
    for template in TEMPLATES:  # what `make proto` runs
        subprocess.run([str(BUF), "generate", "--template", template, "--output", str(out)], cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return out / "gen"


@pytest.mark.parametrize("language", ["go", "python", "ts"])
def test_generated_code_is_current(fresh, language):
    committed, expected = ROOT / "gen" / language, fresh / language
    stale = sorted(
        name for name in _files(committed) | _files(expected)
        if not (committed / name).exists() or not (expected / name).exists()
        or not filecmp.cmp(committed / name, expected / name, shallow=False)
    )
    assert not stale, f"gen/{language} is stale, run `make proto`: {stale}"


def test_a_changed_proto_makes_the_check_fail(tmp_path):
    """The check above can fail: generate from a copy with one more field and compare."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copytree(ROOT / "third_party", copy / "third_party")
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(ROOT / name, copy / name)
    proto = copy / "protos" / "shop" / "catalog" / "v1" / "catalog.proto"
    proto.write_text(proto.read_text().replace(
        "  google.type.Money price_usd = 4;\n", "  google.type.Money price_usd = 4;\n  // Added.\n  string brand = 5;\n"))
    for link in (".tools", ".venv", "tools"):
        (copy / link).symlink_to(ROOT / link)
    subprocess.run([str(BUF), "generate", "--output", str(tmp_path / "out")], cwd=copy, check=True, capture_output=True)
    changed = (tmp_path / "out" / "gen" / "python" / "shop" / "catalog" / "v1" / "catalog_pb2.py").read_bytes()
    assert changed != (ROOT / "gen" / "python" / "shop" / "catalog" / "v1" / "catalog_pb2.py").read_bytes()
