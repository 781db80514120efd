"""Istio resources for the `catalog` test service, as files in the control plane's MESH_ISTIO_DIR.

    (istio_dir / "catalog-rule.yaml").write_text(DESTINATION_RULE)        # subsets v1 and v2 by `version`
    write_atomically(istio_dir / "catalog-vs.yaml", virtual_service(default_route("v2")))
    virtual_service(weighted({"v1": 90, "v2": 10}))                      # one http route per argument

The test backends are registered with Meta `version` v1 / v2 (tests/xds/test_xds_istio.py,
benchmarks/propagation.py).
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

__all__ = ["DESTINATION_RULE", "default_route", "virtual_service", "weighted", "write_atomically"]

DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: catalog
spec:
  host: catalog.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"""


def virtual_service(*http: str) -> str:
    return textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: catalog
        spec:
          hosts: [catalog]
          http:
        """) + "".join(textwrap.indent(route, "  ") for route in http)


def weighted(weights: dict[str, int]) -> str:
    destinations = "".join(f"  - destination: {{host: catalog, subset: {subset}}}\n    weight: {weight}\n"
                           for subset, weight in weights.items())
    return f"- route:\n{destinations}"


def default_route(subset: str) -> str:
    return f"- route:\n  - destination: {{host: catalog, subset: {subset}}}\n"


def write_atomically(path: Path, text: str) -> float:
    """Replace the file atomically (as an editor saving does); returns time.time() just before the
    rename that makes the new text visible. (The temporary file's name does not end in .yaml, so
    the control plane never reads it.)"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    written = time.time()
    tmp.replace(path)
    return written
