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


def test_ca_and_certificates_default_to_the_run_folder():
    config = load_config({"MESH_RUN_DIR": "/tmp/run"})
    assert (config.ca_dir, config.certs_dir, config.cert_ttl) == ("/tmp/run/ca", "/tmp/run/certs", 3600.0)
    config = load_config({"MESH_RUN_DIR": "/tmp/run", "MESH_CA_DIR": "/ca", "MESH_CERTS_DIR": "/c",
                          "MESH_CERT_TTL": "4"})
    assert (config.ca_dir, config.certs_dir, config.cert_ttl) == ("/ca", "/c", 4.0)
    assert load_config({}).ca_dir.endswith("/.run/ca")


def test_a_certificate_ttl_below_two_seconds_is_refused():
    with pytest.raises(ConfigError, match=r"MESH_CERT_TTL: must be at least 2 s: 0\.5"):
        load_config({"MESH_CERT_TTL": "0.5"})


def test_the_consul_token_is_read_as_the_runtimes_read_it(tmp_path):
    (tmp_path / "control-plane.token").write_text("9a50b0ec-62eb-4e5e-8323-c026d0b467ff\n")
    config = load_config({"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "control-plane.token")})
    assert config.consul_token == "9a50b0ec-62eb-4e5e-8323-c026d0b467ff" and config.consul_token not in repr(config)
    with pytest.raises(ConfigError, match=r'CONSUL_HTTP_TOKEN_FILE: cannot read ".*missing"'):
        load_config({"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "missing")})
