package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "inventory-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "inventory")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// baseEnv is the process environment without the contract's variables, so the host's settings
// cannot leak into a test.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "MESH_") || strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "GRPC_") || k == "CONSUL_HTTP_ADDR" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func TestBadConfigExits2NamingEveryVariable(t *testing.T) {
	cmd := exec.Command(binary)
	cmd.Env = append(baseEnv(), "MESH_PORT=abc", "MESH_SERVICE_PORTS=catalog=x", "MESH_DRAIN_TIMEOUT=-1", "MESH_DATA_DIR="+t.TempDir())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 2 {
		t.Fatalf("err = %v, want exit code 2; stderr: %s", err, stderr.String())
	}
	want := `inventory: invalid configuration: MESH_PORT: not an integer: "abc"; MESH_SERVICE_PORTS: "catalog=x": not a port; MESH_DRAIN_TIMEOUT: must be > 0: -1; GRPC_XDS_BOOTSTRAP: required` + "\n"
	if stderr.String() != want {
		t.Fatalf("stderr = %q\nwant     %q", stderr.String(), want)
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout = %q, want nothing", stdout.String())
	}
}
