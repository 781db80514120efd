import pytest

from mesh.runtime.config import ConfigError, load_instance_config

BASE = {"GRPC_XDS_BOOTSTRAP": "/tmp/bootstrap.json"}


def test_defaults_follow_the_contract():
    config = load_instance_config("catalog", {**BASE})
    assert (config.service_name, config.service_version, config.host) == ("catalog", "v1", "127.0.0.1")
    assert config.consul_http_addr == "127.0.0.1:8500"
    assert config.otlp_endpoint == "http://127.0.0.1:4317"
    assert config.instance_id.startswith("catalog-")
    assert config.register is True and config.drain_timeout == 5.0


def test_every_bad_variable_is_named_in_one_error():
    env = {"MESH_PORT": "abc", "MESH_ADMIN_PORT": "70000", "MESH_DRAIN_TIMEOUT": "0", "MESH_REGISTER": "maybe",
           "MESH_LOG_LEVEL": "loud", "OTEL_TRACES_EXPORTER": "zipkin"}
    with pytest.raises(ConfigError) as caught:
        load_instance_config("catalog", env)
    message = str(caught.value)
    for name in [*env, "GRPC_XDS_BOOTSTRAP"]:
        assert name in message
    assert len(caught.value.problems) == 7
    assert 'MESH_PORT: not an integer: "abc"' in message


def test_values_are_parsed():
    config = load_instance_config("x", {**BASE, "MESH_PORT": "5001", "MESH_REGISTER": "false", "MESH_LOG_LEVEL": "WARN",
                                        "OTEL_SERVICE_NAME": "pricing", "MESH_DRAIN_TIMEOUT": "1.5"})
    assert (config.port, config.register, config.log_level, config.service_name, config.drain_timeout) == (
        5001, False, "warn", "pricing", 1.5)


def test_service_ports_give_each_peer_its_xds_target():
    from mesh.runtime.instance import xds_target

    config = load_instance_config("orders", {**BASE, "MESH_SERVICE_PORTS": "catalog=50051, pricing=50061"})
    assert xds_target(config, "pricing") == "xds:///pricing:50061"
    with pytest.raises(LookupError, match="MESH_SERVICE_PORTS has no port for service 'payments'"):
        xds_target(config, "payments")


def test_xds_off_needs_no_bootstrap_and_dials_the_kubernetes_service():
    from mesh.runtime.instance import xds_target

    assert load_instance_config("orders", {**BASE}).xds is True
    config = load_instance_config("orders", {"MESH_XDS": "off", "MESH_NAMESPACE": "shop",
                                             "MESH_SERVICE_PORTS": "pricing=50061"})
    assert (config.xds, config.xds_bootstrap) == (False, "")
    assert xds_target(config, "pricing") == "dns:///pricing.shop.svc.cluster.local:50061"
    with pytest.raises(ConfigError) as caught:
        load_instance_config("orders", {"MESH_XDS": "plain"})
    assert caught.value.problems == ['MESH_XDS: not a boolean (true/false): "plain"', "GRPC_XDS_BOOTSTRAP: required"]


def test_bad_service_ports_are_named_with_the_rest():
    with pytest.raises(ConfigError) as caught:
        load_instance_config("orders", {**BASE, "MESH_SERVICE_PORTS": "catalog=50051,pricing=x,=80,payments,catalog=1",
                                        "MESH_CALL_TIMEOUT": "soon"})
    assert caught.value.problems == [
        'MESH_SERVICE_PORTS: "pricing=x": not a port',
        'MESH_SERVICE_PORTS: "=80": not name=port',
        'MESH_SERVICE_PORTS: "payments": not name=port',
        'MESH_SERVICE_PORTS: "catalog=1": catalog given twice',
        'MESH_CALL_TIMEOUT: not a number of seconds: "soon"',
    ]


def test_propagated_headers_default_to_the_user_tier_and_are_read_name_by_name():
    assert load_instance_config("orders", {**BASE}).propagate_headers == ("x-user-tier",)
    config = load_instance_config("orders", {**BASE, "MESH_PROPAGATE_HEADERS": " x-user-tier, x-canary ,,x_debug.v2"})
    assert config.propagate_headers == ("x-user-tier", "x-canary", "x_debug.v2")


def test_bad_propagated_headers_are_named_with_the_rest():
    with pytest.raises(ConfigError) as caught:
        load_instance_config("orders", {**BASE, "MESH_PROPAGATE_HEADERS": "X-User-Tier,x tier,grpc-timeout,trace-bin,x-a,x-a"})
    assert caught.value.problems == [
        'MESH_PROPAGATE_HEADERS: "X-User-Tier": not a lower-case header name',
        'MESH_PROPAGATE_HEADERS: "x tier": not a lower-case header name',
        'MESH_PROPAGATE_HEADERS: "grpc-timeout": grpc-* and *-bin headers are not propagated',
        'MESH_PROPAGATE_HEADERS: "trace-bin": grpc-* and *-bin headers are not propagated',
        'MESH_PROPAGATE_HEADERS: "x-a": given twice',
    ]


def test_injected_failures_are_off_by_default_and_checked():
    config = load_instance_config("orders", {**BASE})
    assert (config.inject_failure_percent, config.inject_delay_ms) == (0, 0)
    config = load_instance_config("orders", {**BASE, "MESH_INJECT_FAILURE_PERCENT": "50", "MESH_INJECT_DELAY_MS": "300"})
    assert (config.inject_failure_percent, config.inject_delay_ms) == (50, 300)
    with pytest.raises(ConfigError) as caught:
        load_instance_config("orders", {**BASE, "MESH_INJECT_FAILURE_PERCENT": "101", "MESH_INJECT_DELAY_MS": "-1"})
    assert caught.value.problems == [
        "MESH_INJECT_FAILURE_PERCENT: must be between 0 and 100: 101",
        "MESH_INJECT_DELAY_MS: must be between 0 and 3600000: -1",
    ]


SECRET = "9a50b0ec-62eb-4e5e-8323-c026d0b467ff"


def test_the_consul_token_comes_from_the_variable_or_its_file(tmp_path):
    (tmp_path / "payments.token").write_text(SECRET + "\n")
    assert load_instance_config("payments", {**BASE}).consul_token == ""
    assert load_instance_config("payments", {**BASE, "CONSUL_HTTP_TOKEN": "s3cret"}).consul_token == "s3cret"
    config = load_instance_config("payments", {**BASE, "CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "payments.token")})
    assert config.consul_token == SECRET
    assert SECRET not in repr(config)


@pytest.mark.parametrize("env, problem", [
    ({"CONSUL_HTTP_TOKEN": SECRET, "CONSUL_HTTP_TOKEN_FILE": "{dir}/payments.token"},
     "CONSUL_HTTP_TOKEN_FILE: CONSUL_HTTP_TOKEN is set too; give one"),
    ({"CONSUL_HTTP_TOKEN_FILE": "{dir}/missing.token"}, 'CONSUL_HTTP_TOKEN_FILE: cannot read "{dir}/missing.token"'),
    ({"CONSUL_HTTP_TOKEN_FILE": "{dir}/empty.token"}, 'CONSUL_HTTP_TOKEN_FILE: "{dir}/empty.token" is empty'),
    ({"CONSUL_HTTP_TOKEN": "two words"}, "CONSUL_HTTP_TOKEN: not a token (printable ASCII, no spaces)"),
])
def test_a_bad_consul_token_is_named_without_showing_it(tmp_path, env, problem):
    """The same messages as the Go and TypeScript runtimes (config_test.go, config.test.ts)."""
    (tmp_path / "payments.token").write_text(SECRET + "\n")
    (tmp_path / "empty.token").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_instance_config("payments", {**BASE, **{k: v.format(dir=tmp_path) for k, v in env.items()}})
    assert caught.value.problems == [problem.format(dir=tmp_path)]
    assert SECRET not in str(caught.value)
