"""Snapshot versions and the consistency check."""

from __future__ import annotations

import logging

import pytest

from mesh.xds.catalog import Catalog, Endpoint
from mesh.xds.snapshot import InconsistentSnapshot, SnapshotCache, check_consistency, next_snapshot
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, Policy, client_listener, translate

ONE = Catalog.of({"catalog": [Endpoint("catalog-1", "127.0.0.1", 5001)]})
TWO = Catalog.of({"catalog": [Endpoint("catalog-1", "127.0.0.1", 5001), Endpoint("catalog-2", "127.0.0.1", 5002)]})


def broken(catalog: Catalog, type_url: str, name: str) -> dict:
    resources = {t: dict(r) for t, r in translate(catalog).items()}
    del resources[type_url][name]
    return resources


def test_consistent_translation_has_no_problems():
    assert check_consistency(translate(TWO)) == []


@pytest.mark.parametrize(
    ("type_url", "name", "problem"),
    [
        (ENDPOINT, "outbound|catalog", "cluster 'outbound|catalog': no load assignment"),
        (ROUTE, "catalog", "listener 'catalog': no route configuration"),
        (CLUSTER, "outbound|catalog", "route configuration 'catalog': no cluster"),
    ],
)
def test_consistency_check_names_each_dangling_reference(type_url, name, problem):
    [found] = check_consistency(broken(TWO, type_url, name))
    assert found.startswith(problem)


def test_version_bumps_only_when_content_changes():
    first = next_snapshot(None, translate(ONE), Policy())
    assert first.version == 1
    assert next_snapshot(first, translate(ONE), Policy()) is first
    second = next_snapshot(first, translate(TWO), Policy())
    assert second.version == 2
    # only the endpoints changed: the other types keep their version, so they are not re-sent
    assert [second.version_of(t) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)] == ["1", "1", "1", "2"]


def test_cache_keeps_serving_the_previous_snapshot_when_the_check_fails(caplog):
    cache = SnapshotCache()
    published = []
    cache.subscribe(published.append)
    assert cache.update(translate(ONE), Policy())
    with caplog.at_level(logging.ERROR, logger="mesh.xds.snapshot"):
        assert not cache.update(broken(TWO, ENDPOINT, "outbound|catalog"), Policy())
    assert cache.current.version == 1 and [s.version for s in published] == [1]
    assert "rejected inconsistent xDS snapshot, still serving version 1" in caplog.text
    with pytest.raises(InconsistentSnapshot):
        next_snapshot(cache.current, broken(TWO, ROUTE, "catalog"), Policy())


def test_resolve_builds_server_listeners_and_answers_unknown_services_as_empty():
    snapshot = next_snapshot(None, translate(ONE), Policy())
    server_name = "grpc/server?xds.resource.listening_address=127.0.0.1:6000"
    found = snapshot.resolve(LISTENER, ["catalog", "unknown", server_name], workload="catalog")
    assert sorted(found) == sorted(["catalog", "unknown", server_name])
    assert found["unknown"] == client_listener("unknown", Policy())
    empty = snapshot.resolve(ENDPOINT, ["outbound|unknown"], workload="x")["outbound|unknown"]
    assert not empty.endpoints and empty.cluster_name == "outbound|unknown"
    assert snapshot.resolve(CLUSTER, ["not-ours"], workload="x") == {}
    assert sorted(snapshot.resolve(LISTENER, None, workload="x")) == ["catalog"]  # wildcard
