"""The end-to-end tests under both control planes, side by side: `make compare-control-planes`
(about 10 minutes). The same tests (tests/e2e, but for the ones that start meshes of their own with
our control plane: the walkthroughs and the scaffold test), first on a mesh with our control plane
(mesh/xds), then on one with real istiod (tools/istiod, MESH_CONTROL_PLANE=istiod); each run's
outcome per test from pytest's JUnit XML, and the traffic tests' figures (.run/traffic/*.json)
per feature, client language and control plane.

Output: a table per test module on stdout (passed / failed / skipped / xfailed, and the reasons of
the skips and expected failures, which name each deliberate difference) and
`benchmarks/results/istiod-vs-ours.json`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".run" / "control-planes"
FIGURES = ROOT / ".run" / "traffic"
RESULT = ROOT / "benchmarks" / "results" / "istiod-vs-ours.json"
CONTROL_PLANES = ("ours", "istiod")
OWN_MESHES = ("tests/e2e/test_walkthroughs.py", "tests/e2e/test_meshctl_new.py")  # always ours: not compared


def run(control_plane: str, tests: list[str]) -> dict:
    """pytest on `tests` under one control plane: outcome per test id, the run's seconds, figures."""
    xml = WORK / f"{control_plane}.xml"
    shutil.rmtree(FIGURES, ignore_errors=True)
    env = {**os.environ, "MESH_CONTROL_PLANE": control_plane}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                           *[f"--ignore={t}" for t in OWN_MESHES], *tests], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    (WORK / f"{control_plane}.log").write_text(done.stdout + done.stderr)
    outcomes = {}
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('file') or case.get('classname', '').replace('.', '/') + '.py'}::{case.get('name')}"
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, reason = "failed", (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                xfail = (child.get("type") or "") == "pytest.xfail"
                outcome, reason = ("xfailed" if xfail else "skipped"), (child.get("message") or "")[:300]
        outcomes[test] = {"outcome": outcome, "reason": reason}
    figures = {json.loads(p.read_text())["feature"]: json.loads(p.read_text())["rows"]
               for p in sorted(FIGURES.glob("*.json"))} if FIGURES.is_dir() else {}
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return {"outcomes": outcomes, "seconds": round(seconds), "summary": summary, "figures": figures}


def module_of(test: str) -> str:
    return test.split("::")[0].rsplit("/", 1)[-1]


def table(results: dict[str, dict]) -> tuple[list[dict], str]:
    modules: dict[str, dict[str, collections.Counter]] = {}
    notes: dict[str, set[str]] = collections.defaultdict(set)
    for control_plane, result in results.items():
        for test, found in result["outcomes"].items():
            modules.setdefault(module_of(test), {cp: collections.Counter() for cp in CONTROL_PLANES})
            modules[module_of(test)][control_plane][found["outcome"]] += 1
            if found["outcome"] != "passed":
                notes[module_of(test)].add(f"{control_plane}: {found['outcome']} {test.split('::')[1]}: {found['reason']}")
    rows = []
    lines = ["| tests | ours | istiod | notes |", "|---|---|---|---|"]
    for module in sorted(modules):
        cells = {cp: ", ".join(f"{n} {k}" for k, n in sorted(modules[module][cp].items())) or "-" for cp in CONTROL_PLANES}
        rows.append({"tests": module, **cells, "notes": sorted(notes[module])})
        lines.append(f"| {module} | {cells['ours']} | {cells['istiod']} | {'; '.join(sorted(notes[module]))[:400]} |")
    return rows, "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="*", default=["tests/e2e"], help="pytest paths (default: tests/e2e)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results = {cp: run(cp, args.tests) for cp in CONTROL_PLANES}
    rows, text = table(results)
    print(text)
    for cp in CONTROL_PLANES:
        print(f"{cp}: {results[cp]['summary']} ({results[cp]['seconds']} s)")
    document = {
        "what": "the end-to-end tests under our control plane (mesh/xds) and under real istiod (tools/istiod: "
                "istiod-local), each on a mesh the e2e fixture starts; `make compare-control-planes`",
        "measured": f"{datetime.date.today()}, {os.cpu_count()} cores, {platform.machine()}",
        "runs": {cp: {"summary": results[cp]["summary"], "seconds": results[cp]["seconds"]} for cp in CONTROL_PLANES},
        "rows": rows,
        "figures": {cp: results[cp]["figures"] for cp in CONTROL_PLANES},
    }
    RESULT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"(JSON: {RESULT.relative_to(ROOT)})")
    return 0 if not any(re.search(r"\d+ (failed|error)", r["summary"]) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
