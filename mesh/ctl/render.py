"""Pure rendering: tables, durations, and the summary of a node's xDS state (unit-tested)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["XDS_TYPES", "duration", "table", "xds_cell"]

# type URL suffix -> column, in the order a client asks for them
XDS_TYPES = {
    "envoy.config.listener.v3.Listener": "LDS",
    "envoy.config.route.v3.RouteConfiguration": "RDS",
    "envoy.config.cluster.v3.Cluster": "CDS",
    "envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
}


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s, 2d03h; negative: `expired 5m ago`."""
    if seconds < 0:
        return f"expired {duration(-seconds)} ago"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def xds_cell(states: Iterable[tuple[str, str, str]]) -> str:
    """One node's resources of one type, as (client_status, config_status, version) triples, in one
    cell: the worst state first (NACKED > STALE > REQUESTED > SYNCED), how many, and the version
    when they all agree: `SYNCED 4 v12`, `NACKED 1/4`, `-` for none."""
    states = list(states)
    if not states:
        return "-"
    nacked = sum(1 for client, _, _ in states if client == "NACKED")
    stale = sum(1 for client, config, _ in states if config == "STALE" and client != "NACKED")
    pending = sum(1 for client, _, _ in states if client in ("REQUESTED", "UNKNOWN", "DOES_NOT_EXIST"))
    total = len(states)
    if nacked:
        return f"NACKED {nacked}/{total}"
    if stale:
        return f"STALE {stale}/{total}"
    if pending:
        return f"REQUESTED {pending}/{total}"
    versions = {version for _, _, version in states}
    return f"SYNCED {total}" + (f" v{versions.pop()}" if len(versions) == 1 else "")
