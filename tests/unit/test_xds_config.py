"""The control plane's configuration: defaults, MESH_NAMESPACE, and every bad variable named."""

from __future__ import annotations

import pytest

from mesh.runtime.config import ConfigError
from mesh.xds.__main__ import load_config


def test_defaults():
    config = load_config({})
    assert (config.host, config.port, config.namespace, config.consul_http_addr) == (
        "127.0.0.1", 18000, "default", "127.0.0.1:8500")


def test_namespace_is_configuration():
    assert load_config({"MESH_NAMESPACE": "shop"}).namespace == "shop"


def test_every_bad_variable_is_named():
    with pytest.raises(ConfigError) as raised:
        load_config({"MESH_XDS_PORT": "abc", "MESH_LOG_LEVEL": "loud", "MESH_XDS_UNACKED_TIMEOUT": "0"})
    assert "MESH_XDS_PORT" in str(raised.value) and "MESH_LOG_LEVEL" in str(raised.value)
    assert "MESH_XDS_UNACKED_TIMEOUT" in str(raised.value)
