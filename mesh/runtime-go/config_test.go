package mesh

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// With only the bootstrap set, an instance gets the defaults docs/runtime-contract.md lists.
func TestLoadConfigDefaultsOfTheContract(t *testing.T) {
	cfg, err := LoadConfig("inventory", env(map[string]string{"GRPC_XDS_BOOTSTRAP": "/tmp/b.json"}))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"service", cfg.ServiceName, "inventory"},
		{"version", cfg.ServiceVersion, "v1"},
		{"instance", cfg.InstanceID, "inventory-" + strconv.Itoa(os.Getpid())},
		{"namespace", cfg.Namespace, "default"},
		{"host", cfg.Host, "127.0.0.1"},
		{"port", cfg.Port, 0},
		{"admin port", cfg.AdminPort, 0},
		{"service ports", len(cfg.ServicePorts), 0},
		{"call timeout", cfg.CallTimeout, 5 * time.Second},
		{"propagated headers", strings.Join(cfg.PropagateHeaders, ","), "x-user-tier"},
		{"drain timeout", cfg.DrainTimeout, 5 * time.Second},
		{"log level", cfg.LogLevel, slog.LevelInfo},
		{"register", cfg.Register, true},
		{"injected failures", cfg.InjectFailurePercent, 0},
		{"injected delay", cfg.InjectDelay, time.Duration(0)},
		{"consul", cfg.ConsulAddr, "127.0.0.1:8500"},
		{"otlp", cfg.OTLPEndpoint, "http://127.0.0.1:4317"},
		{"exporter", cfg.TracesExporter, "otlp"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadConfigReadsValues(t *testing.T) {
	cfg, err := LoadConfig("inventory", env(map[string]string{
		"OTEL_SERVICE_NAME": "stock", "MESH_NAMESPACE": "shop", "MESH_DRAIN_TIMEOUT": "0.5",
		"MESH_CALL_TIMEOUT": "1.5", "MESH_LOG_LEVEL": "DEBUG", "MESH_REGISTER": "false",
		"MESH_SERVICE_PORTS": " catalog=50051, pricing = 50061 ,", "GRPC_XDS_BOOTSTRAP": "b",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace != "shop" || cfg.DrainTimeout != 500*time.Millisecond || cfg.CallTimeout != 1500*time.Millisecond ||
		cfg.LogLevel != slog.LevelDebug || cfg.Register {
		t.Fatalf("cfg = %+v", cfg)
	}
	// The default instance id follows the configured service name.
	if cfg.InstanceID != "stock-"+strconv.Itoa(os.Getpid()) {
		t.Fatalf("instance id = %q", cfg.InstanceID)
	}
	for service, want := range map[string]string{"catalog": "xds:///catalog:50051", "pricing": "xds:///pricing:50061"} {
		if got, err := cfg.Target(service); got != want || err != nil {
			t.Errorf("Target(%s) = %q, %v; want %q", service, got, err, want)
		}
	}
}

// Dialing a service the instance did not declare is an error that says which variable to fix.
func TestTargetOfAnUndeclaredServiceNamesTheVariable(t *testing.T) {
	cfg, err := LoadConfig("orders", env(map[string]string{"GRPC_XDS_BOOTSTRAP": "b", "MESH_SERVICE_PORTS": "catalog=50051"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&Env{Config: cfg}).Dial("payments")
	if err == nil || !strings.Contains(err.Error(), "MESH_SERVICE_PORTS") || !strings.Contains(err.Error(), `"payments"`) {
		t.Fatalf("err = %v; want one naming MESH_SERVICE_PORTS and the service", err)
	}
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	_, err := LoadConfig("inventory", env(map[string]string{
		"MESH_PORT":            "abc",
		"MESH_ADMIN_PORT":      "70000",
		"MESH_SERVICE_PORTS":   "catalog=x,pricing,=5,payments=0,catalog=7",
		"MESH_CALL_TIMEOUT":    "-1",
		"MESH_DRAIN_TIMEOUT":   "0",
		"MESH_LOG_LEVEL":       "loud",
		"MESH_REGISTER":        "maybe",
		"OTEL_TRACES_EXPORTER": "zipkin",
	}))
	want := `invalid configuration: MESH_PORT: not an integer: "abc"; ` +
		`MESH_ADMIN_PORT: must be between 0 and 65535: 70000; ` +
		`MESH_SERVICE_PORTS: "catalog=x": not a port; MESH_SERVICE_PORTS: "pricing": not name=port; ` +
		`MESH_SERVICE_PORTS: "=5": not name=port; MESH_SERVICE_PORTS: "payments=0": not a port; ` +
		`MESH_CALL_TIMEOUT: must be > 0: -1; MESH_DRAIN_TIMEOUT: must be > 0: 0; ` +
		`MESH_LOG_LEVEL: must be one of debug, info, warn, error: "loud"; ` +
		`MESH_REGISTER: not a boolean (true/false): "maybe"; GRPC_XDS_BOOTSTRAP: required; ` +
		`OTEL_TRACES_EXPORTER: must be one of otlp, none: "zipkin"`
	if err == nil || err.Error() != want || !IsConfigError(err) {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	_, err = LoadConfig("inventory", env(map[string]string{"GRPC_XDS_BOOTSTRAP": "b", "MESH_DRAIN_TIMEOUT": "soon"}))
	if err == nil || err.Error() != `invalid configuration: MESH_DRAIN_TIMEOUT: not a number of seconds: "soon"` {
		t.Fatalf("err = %v", err)
	}
}

func TestPropagatedHeadersAreReadNameByName(t *testing.T) {
	cfg, err := LoadConfig("orders", env(map[string]string{
		"GRPC_XDS_BOOTSTRAP": "b", "MESH_PROPAGATE_HEADERS": " x-user-tier, x-canary ,,x_debug.v2",
	}))
	if err != nil || strings.Join(cfg.PropagateHeaders, ",") != "x-user-tier,x-canary,x_debug.v2" {
		t.Fatalf("PropagateHeaders = %q, %v", cfg.PropagateHeaders, err)
	}
	_, err = LoadConfig("orders", env(map[string]string{
		"GRPC_XDS_BOOTSTRAP": "b", "MESH_PROPAGATE_HEADERS": "X-User-Tier,x tier,grpc-timeout,trace-bin,x-a,x-a",
	}))
	want := `invalid configuration: MESH_PROPAGATE_HEADERS: "X-User-Tier": not a lower-case header name; ` +
		`MESH_PROPAGATE_HEADERS: "x tier": not a lower-case header name; ` +
		`MESH_PROPAGATE_HEADERS: "grpc-timeout": grpc-* and *-bin headers are not propagated; ` +
		`MESH_PROPAGATE_HEADERS: "trace-bin": grpc-* and *-bin headers are not propagated; ` +
		`MESH_PROPAGATE_HEADERS: "x-a": given twice`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

func TestInjectedFailuresAreChecked(t *testing.T) {
	cfg, err := LoadConfig("orders", env(map[string]string{
		"GRPC_XDS_BOOTSTRAP": "b", "MESH_INJECT_FAILURE_PERCENT": "50", "MESH_INJECT_DELAY_MS": "300",
	}))
	if err != nil || cfg.InjectFailurePercent != 50 || cfg.InjectDelay != 300*time.Millisecond {
		t.Fatalf("cfg = %+v, %v", cfg, err)
	}
	_, err = LoadConfig("orders", env(map[string]string{
		"GRPC_XDS_BOOTSTRAP": "b", "MESH_INJECT_FAILURE_PERCENT": "101", "MESH_INJECT_DELAY_MS": "-1",
	}))
	want := `invalid configuration: MESH_INJECT_FAILURE_PERCENT: must be between 0 and 100: 101; ` +
		`MESH_INJECT_DELAY_MS: must be between 0 and 3600000: -1`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

// CONSUL_HTTP_TOKEN, or the file CONSUL_HTTP_TOKEN_FILE names, as Consul's CLI takes them; the
// messages (which never show the secret) match the Python and TypeScript runtimes'.
func TestConsulTokenFromTheVariableOrItsFile(t *testing.T) {
	dir := t.TempDir()
	file, empty, missing := dir+"/payments.token", dir+"/empty.token", dir+"/missing.token"
	if err := os.WriteFile(file, []byte("9a50b0ec-62eb-4e5e-8323-c026d0b467ff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := []struct{ token, file, want string }{
		{"", "", ""},
		{"s3cret", "", "s3cret"},
		{"", file, "9a50b0ec-62eb-4e5e-8323-c026d0b467ff"},
	}
	for _, c := range good {
		cfg, err := LoadConfig("payments", env(map[string]string{
			"GRPC_XDS_BOOTSTRAP": "b", "CONSUL_HTTP_TOKEN": c.token, "CONSUL_HTTP_TOKEN_FILE": c.file}))
		if err != nil || cfg.ConsulToken != c.want {
			t.Errorf("token %q, file %q: got %q, %v; want %q", c.token, c.file, cfg.ConsulToken, err, c.want)
		}
	}
	bad := []struct{ token, file, want string }{
		{"s3cret", file, "CONSUL_HTTP_TOKEN_FILE: CONSUL_HTTP_TOKEN is set too; give one"},
		{"", missing, "CONSUL_HTTP_TOKEN_FILE: cannot read \"" + missing + "\""},
		{"", empty, "CONSUL_HTTP_TOKEN_FILE: \"" + empty + "\" is empty"},
		{"two words", "", "CONSUL_HTTP_TOKEN: not a token (printable ASCII, no spaces)"},
	}
	for _, c := range bad {
		_, err := LoadConfig("payments", env(map[string]string{
			"GRPC_XDS_BOOTSTRAP": "b", "CONSUL_HTTP_TOKEN": c.token, "CONSUL_HTTP_TOKEN_FILE": c.file}))
		if err == nil || err.Error() != "invalid configuration: "+c.want {
			t.Errorf("token %q, file %q: got %v; want %q", c.token, c.file, err, c.want)
		}
	}
}

func TestXDSOffNeedsNoBootstrapAndDialsTheKubernetesService(t *testing.T) {
	cfg, err := LoadConfig("orders", env(map[string]string{"GRPC_XDS_BOOTSTRAP": "b"}))
	if err != nil || !cfg.XDS {
		t.Fatalf("default: XDS %v, err %v; want true", cfg.XDS, err)
	}
	cfg, err = LoadConfig("orders", env(map[string]string{"MESH_XDS": "off", "MESH_NAMESPACE": "shop", "MESH_SERVICE_PORTS": "pricing=50061"}))
	if err != nil || cfg.XDS || cfg.XDSBootstrap != "" {
		t.Fatalf("MESH_XDS=off: %+v, %v", cfg, err)
	}
	if target, err := cfg.Target("pricing"); err != nil || target != "dns:///pricing.shop.svc.cluster.local:50061" {
		t.Fatalf("Target = %q, %v", target, err)
	}
	_, err = LoadConfig("orders", env(map[string]string{"MESH_XDS": "plain"}))
	want := `invalid configuration: MESH_XDS: not a boolean (true/false): "plain"; GRPC_XDS_BOOTSTRAP: required`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v; want %s", err, want)
	}
}
