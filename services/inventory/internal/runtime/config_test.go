package runtime

import (
	"log/slog"
	"maps"
	"os"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig("inventory", env(map[string]string{EnvXDSBootstrap: "/tmp/b.json"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ServiceName: "inventory", ServiceVersion: "v1", InstanceID: "inventory-" + itoa(os.Getpid()),
		Host: "127.0.0.1", Port: 0, AdminPort: 0, DataDir: "data", DrainTimeout: 5 * time.Second,
		LogLevel: slog.LevelInfo, Register: true, ConsulAddr: "127.0.0.1:8500", XDSBootstrap: "/tmp/b.json",
		OTLPEndpoint: "http://127.0.0.1:4317", TracesExporter: "otlp",
	}
	if cfg != want {
		t.Fatalf("cfg = %+v\nwant  %+v", cfg, want)
	}
}

func TestLoadConfigValues(t *testing.T) {
	cfg, err := LoadConfig("inventory", env(map[string]string{
		EnvServiceName: "stock", EnvServiceVersion: "v2", EnvInstanceID: "stock-a", EnvPort: "7001",
		EnvAdminPort: "7002", EnvDataDir: "/var/x", EnvDrainTimeout: "0.5", EnvLogLevel: "DEBUG",
		EnvRegister: "false", EnvConsulAddr: "127.0.0.1:9500", EnvXDSBootstrap: "b.json",
		EnvOTLPEndpoint: "http://127.0.0.1:14317", EnvTracesExporter: "none",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServiceName != "stock" || cfg.InstanceID != "stock-a" || cfg.Port != 7001 || cfg.AdminPort != 7002 ||
		cfg.DrainTimeout != 500*time.Millisecond || cfg.LogLevel != slog.LevelDebug || cfg.Register ||
		cfg.TracesExporter != "none" || cfg.ServiceVersion != "v2" {
		t.Fatalf("cfg = %+v", cfg)
	}
	// The default instance id follows the configured service name.
	cfg, err = LoadConfig("inventory", env(map[string]string{EnvServiceName: "stock", EnvXDSBootstrap: "b"}))
	if err != nil || cfg.InstanceID != "stock-"+itoa(os.Getpid()) {
		t.Fatalf("instance id = %q, %v", cfg.InstanceID, err)
	}
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	bad := map[string]string{
		EnvPort:           "abc",
		EnvAdminPort:      "70000",
		EnvDrainTimeout:   "0",
		EnvLogLevel:       "loud",
		EnvRegister:       "maybe",
		EnvTracesExporter: "zipkin",
	}
	_, err := LoadConfig("inventory", env(bad))
	want := `invalid configuration: MESH_PORT: not an integer: "abc"; ` +
		`MESH_ADMIN_PORT: must be between 0 and 65535: 70000; MESH_DRAIN_TIMEOUT: must be > 0: 0; ` +
		`MESH_LOG_LEVEL: must be one of debug, info, warn, error: "loud"; ` +
		`MESH_REGISTER: not a boolean (true/false): "maybe"; GRPC_XDS_BOOTSTRAP: required; ` +
		`OTEL_TRACES_EXPORTER: must be one of otlp, none: "zipkin"`
	if err == nil || err.Error() != want || !IsConfigError(err) {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	// Each variable alone is reported alone.
	for k, v := range bad {
		m := maps.Clone(map[string]string{EnvXDSBootstrap: "b"})
		m[k] = v
		_, err := LoadConfig("inventory", env(m))
		ce, ok := err.(*ConfigError)
		if !ok || len(ce.Problems) != 1 {
			t.Fatalf("%s=%s: err = %v", k, v, err)
		}
	}
	_, err = LoadConfig("inventory", env(map[string]string{EnvXDSBootstrap: "b", EnvDrainTimeout: "soon"}))
	if err == nil || err.Error() != `invalid configuration: MESH_DRAIN_TIMEOUT: not a number of seconds: "soon"` {
		t.Fatalf("err = %v", err)
	}
}

func itoa(n int) string { return slog.IntValue(n).String() }
