"""grpc core experiments the runtime turns off, before grpc core reads them.

grpcio 1.85's xDS-enabled server runs each route's HTTP filters as a separate filter chain
(the core experiment `xds_server_filter_chain_per_route`, on by default). On that path a call
that ends with a status and no initial metadata before it (a Trailers-Only response: a unary
error, a stream failing or ending before its first message) aborts the whole process
("pipe.h:85 Check failed: has_value()"). With the experiment off, the server uses its
long-standing per-listener filter chain (RBAC included) and Trailers-Only responses are fine.

grpc core reads GRPC_EXPERIMENTS once, when `grpc` is first imported, so this module must run
before that: `mesh/runtime/__init__.py` imports it first (and it imports nothing of grpc).
`TRAILERS_ONLY` says whether it did in time; if not (grpc imported before `mesh.runtime`, with no
such setting in the environment), the runtime keeps sending response headers before every
error (errors.py), which never crashes but makes every error non-retryable for the caller.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

__all__ = ["DISABLED", "TRAILERS_ONLY", "disable_experiments"]

VARIABLE = "GRPC_EXPERIMENTS"
DISABLED = ("xds_server_filter_chain_per_route",)


def _entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def disable_experiments(environ: MutableMapping[str, str] = os.environ,
                        modules: Mapping[str, object] = sys.modules) -> bool:
    """Add `-NAME` to GRPC_EXPERIMENTS for each of DISABLED it does not name already (an explicit
    choice wins), unless grpc core is loaded already; True if core sees every one of them off."""
    entries = _entries(environ.get(VARIABLE, ""))
    if "grpc._cython.cygrpc" not in modules:
        named = {entry.lstrip("-") for entry in entries}
        entries += [f"-{name}" for name in DISABLED if name not in named]
        environ[VARIABLE] = ",".join(entries)
    return all(f"-{name}" in entries for name in DISABLED)


TRAILERS_ONLY = disable_experiments()
