"""mesh.runtime.core_experiments: GRPC_EXPERIMENTS turns xds_server_filter_chain_per_route off
before grpc core reads it (grpcio 1.85's xDS server aborts on Trailers-Only responses with it on)."""

from __future__ import annotations

from mesh.runtime.core_experiments import disable_experiments

OFF = "-xds_server_filter_chain_per_route"


def test_it_is_turned_off_before_grpc_core_loads_keeping_other_experiments():
    assert disable_experiments(environ := {}, modules={}) and environ == {"GRPC_EXPERIMENTS": OFF}
    assert disable_experiments(environ := {"GRPC_EXPERIMENTS": "fuse_filters"}, modules={})
    assert environ == {"GRPC_EXPERIMENTS": f"fuse_filters,{OFF}"}


def test_an_explicit_choice_wins():
    environ = {"GRPC_EXPERIMENTS": "xds_server_filter_chain_per_route"}
    assert not disable_experiments(environ, modules={})
    assert environ == {"GRPC_EXPERIMENTS": "xds_server_filter_chain_per_route"}
    assert disable_experiments({"GRPC_EXPERIMENTS": f" {OFF} "}, modules={})


def test_once_grpc_core_is_loaded_only_the_environment_it_read_counts():
    loaded = {"grpc._cython.cygrpc": object()}
    assert not disable_experiments(environ := {}, modules=loaded) and environ == {}
    assert disable_experiments({"GRPC_EXPERIMENTS": OFF}, modules=loaded)
