"""Istio's own validator on our Istio files: istioctl (built from istio.io/istio, `make test` builds
it) checks schemas offline (`istioctl validate -f`) and cross-references (`istioctl analyze
--use-kube=false`). The examples in invalid/ are wrong on purpose; the table says what istioctl
answers for each beside our control plane's verdict, so that every difference is written down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mesh.xds.istio import _State, compile_policy

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


# file -> (istioctl validate, istioctl analyze, our control plane): "valid" or a fragment of the
# reason each gives. Where they differ the comment says why.
VERDICTS = {
    "bad-yaml.yaml": ("did not find expected ',' or '}'", "did not find expected ',' or '}'", "not readable YAML"),
    "unknown-field.yaml": ('unknown field "subsetz" in istio.networking.v1alpha3.DestinationRule', "valid",
                           'no field named "subsetz"'),
    "duration.yaml": ('bad Duration: time: unknown unit " seconds" in duration "3 seconds"', "bad Duration",
                      "spec.http[0].timeout: bad Duration '3 seconds'"),
    "missing-subset.yaml": ("valid", "IST0101", "subset 'v3': no DestinationRule of pricing.default.svc.cluster.local "
                                                "defines it"),
    # Istio treats weights as relative (they need not sum to 100); our control plane is stricter.
    "weights-not-100.yaml": ("valid", "valid", "sum to 110, not 100"),
    "grpc-status.yaml": ('gRPC status "UNAVAILABEL" is not supported', 'gRPC status "UNAVAILABEL" is not supported',
                         "grpcStatus 'UNAVAILABEL': not a gRPC status code name"),
    "percentage.yaml": ("percentage 120 is neither 0.0, nor in range", "percentage 120 is neither 0.0, nor in range",
                        "percentage 120.0: a percentage is between 0 and 100"),
    "retry-on.yaml": ('"flaky" is not a valid retryOn policy', '"flaky" is not a valid retryOn policy',
                      "retryOn 'flaky': not a retry condition"),
    "negative-attempts.yaml": ("attempts cannot be negative", "attempts cannot be negative",
                               "attempts -1: must not be negative"),
    "sub-millisecond.yaml": ("duration must be greater than 1ms", "duration must be greater than 1ms",
                             "timeout 0.000500s: a duration must be at least 1ms"),
    # Istio accepts an abort that names no status (Envoy then aborts nothing); gRPC clients need one.
    "abort-without-status.yaml": ("valid", "valid", "fault.abort: needs grpcStatus"),
    "ejection-percent.yaml": ("percentage 120 is not in range 0..100", "percentage 120 is not in range 0..100",
                              "maxEjectionPercent 120: a percentage is between 0 and 100"),
    "max-requests.yaml": ("http2 max requests must be non-negative", "http2 max requests must be non-negative",
                          "http2MaxRequests: must not be negative"),
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


def verdict(done: subprocess.CompletedProcess, expected: str, valid_text: str) -> str:
    """istioctl's answer in the table's terms: "valid", the expected fragment, or what it said instead."""
    output = done.stdout + done.stderr
    if done.returncode == 0 and valid_text in output:
        return "valid"
    if done.returncode != 0 and expected != "valid" and expected in output:
        return expected
    return f"rc {done.returncode}: {output.strip()[:300]}"


def ours(path: Path, tmp_path: Path) -> str:
    """Our control plane's answer: "valid" or the reason it rejects the example with."""
    folder = tmp_path / path.stem
    folder.mkdir()
    (folder / "subsets.yaml").write_text(SUBSETS)
    (folder / path.name).write_text(path.read_text())
    _, rejections, _ = compile_policy(sorted(folder.glob("*.yaml")), "default", _State())
    return "; ".join(rejections.values()) or "valid"


def test_every_invalid_example_is_judged_by_istioctl_and_by_our_control_plane_as_the_table_says(tmp_path: Path):
    (tmp_path / "subsets.yaml").write_text(SUBSETS)
    rows, wrong = [], []
    for name, (validate, analyze, our) in sorted(VERDICTS.items()):
        path = INVALID / name
        got = (verdict(istioctl("validate", "-f", path), validate, "is valid"),
               verdict(istioctl("analyze", "--use-kube=false", "-A", tmp_path / "subsets.yaml", path), analyze,
                       "No validation issues found"),
               ours(path, tmp_path))
        rows.append((name, *got))
        if got[:2] != (validate, analyze) or (our == "valid") != (got[2] == "valid") or our not in got[2]:
            wrong.append(f"{name}: expected {(validate, analyze, our)}, got {got}")
    print("\n| example | istioctl validate | istioctl analyze | our control plane |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    assert not wrong, "\n".join(wrong)


def test_istioctl_analyze_finds_a_missing_subset_with_its_own_exit_code(tmp_path: Path) -> None:
    (tmp_path / "subsets.yaml").write_text(SUBSETS)
    done = istioctl("analyze", "--use-kube=false", "-A", tmp_path / "subsets.yaml", INVALID / "missing-subset.yaml")
    assert done.returncode == ANALYZE_FOUND_ISSUES
    assert 'Referenced host+subset in destinationrule not found: "pricing.default.svc.cluster.local+v3"' in done.stdout
