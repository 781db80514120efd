"""Istio's own validator on our Istio files: istioctl (built from istio.io/istio, `make test` builds
it) checks schemas offline (`istioctl validate -f`) and cross-references (`istioctl analyze
--use-kube=false`). The examples in invalid/ are wrong on purpose; the table says what istioctl
answers for each, so that a difference with our control plane's verdict is written down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ISTIO = ROOT / "istio"
SCENARIOS = sorted(p.name for p in (ISTIO / "scenarios").iterdir() if p.is_dir())
ISTIOCTL = ROOT / ".tools" / "bin" / "istioctl"
INVALID = Path(__file__).parent / "invalid"
# A DestinationRule the examples may refer to (pricing's subsets v1 and v2).
SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing, namespace: default}
spec:
  host: pricing.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
ANALYZE_FOUND_ISSUES = 79  # istioctl analyze's exit code when an analyzer reports an error


def istioctl(*args: str | Path) -> subprocess.CompletedProcess:
    assert ISTIOCTL.exists(), f"{ISTIOCTL} is missing: `make .tools/bin/istioctl` builds it (make test does)"
    return subprocess.run([str(ISTIOCTL), *map(str, args)], capture_output=True, text=True, timeout=60)


# file -> (validate's verdict, analyze's verdict): "valid" or a fragment of the reason istioctl gives
VERDICTS = {
    "bad-yaml.yaml": ("did not find expected ',' or '}'", "did not find expected ',' or '}'"),
    "unknown-field.yaml": ('unknown field "subsetz" in istio.networking.v1alpha3.DestinationRule', "valid"),
    "duration.yaml": ('bad Duration: time: unknown unit " seconds" in duration "3 seconds"', "bad Duration"),
    "missing-subset.yaml": ("valid", 'IST0101'),
    # Istio treats weights as relative (they need not sum to 100); our control plane is stricter.
    "weights-not-100.yaml": ("valid", "valid"),
}


def test_the_istio_folder_is_valid_for_istioctl() -> None:
    done = istioctl("validate", "-f", ISTIO)
    assert done.returncode == 0, done
    analyzed = istioctl("analyze", "--use-kube=false", "-A", *sorted(ISTIO.glob("*.yaml")))
    assert analyzed.returncode == 0 and "No validation issues found" in analyzed.stdout + analyzed.stderr, analyzed


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_with_the_defaults_is_valid_for_istioctl(scenario: str) -> None:
    files = sorted(ISTIO.glob("*.yaml")) + sorted((ISTIO / "scenarios" / scenario).glob("*.yaml"))
    assert istioctl("validate", "-f", *[arg for f in files for arg in ("-f", f)][1:]).returncode == 0
    analyzed = istioctl("analyze", "--use-kube=false", "-A", *files)
    assert analyzed.returncode == 0 and "No validation issues found" in analyzed.stdout + analyzed.stderr, analyzed


def test_every_invalid_example_has_a_verdict() -> None:
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(VERDICTS)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_istioctl_validate(name: str) -> None:
    expected, _ = VERDICTS[name]
    done = istioctl("validate", "-f", INVALID / name)
    if expected == "valid":
        assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done
    else:
        assert done.returncode == 1 and expected in done.stderr + done.stdout, done


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_istioctl_analyze(name: str, tmp_path: Path) -> None:
    expected = VERDICTS[name][1]
    (tmp_path / "subsets.yaml").write_text(SUBSETS)
    done = istioctl("analyze", "--use-kube=false", "-A", tmp_path / "subsets.yaml", INVALID / name)
    if expected == "valid":
        assert done.returncode == 0 and "No validation issues found" in done.stdout + done.stderr, done
    else:
        assert done.returncode != 0 and expected in done.stdout + done.stderr, done


def test_istioctl_analyze_finds_a_missing_subset_with_its_own_exit_code(tmp_path: Path) -> None:
    (tmp_path / "subsets.yaml").write_text(SUBSETS)
    done = istioctl("analyze", "--use-kube=false", "-A", tmp_path / "subsets.yaml", INVALID / "missing-subset.yaml")
    assert done.returncode == ANALYZE_FOUND_ISSUES
    assert 'Referenced host+subset in destinationrule not found: "pricing.default.svc.cluster.local+v3"' in done.stdout
