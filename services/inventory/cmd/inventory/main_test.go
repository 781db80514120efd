package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	inventoryv1 "polymesh.local/gen/go/shop/inventory/v1"
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
	cmd.Env = append(baseEnv(), "MESH_PORT=abc", "MESH_DRAIN_TIMEOUT=-1", "MESH_DATA_DIR="+t.TempDir())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 2 {
		t.Fatalf("err = %v, want exit code 2; stderr: %s", err, stderr.String())
	}
	want := `inventory: invalid configuration: MESH_PORT: not an integer: "abc"; MESH_DRAIN_TIMEOUT: must be > 0: -1; GRPC_XDS_BOOTSTRAP: required` + "\n"
	if stderr.String() != want {
		t.Fatalf("stderr = %q\nwant     %q", stderr.String(), want)
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout = %q, want nothing", stdout.String())
	}
}

// logTail collects the instance's JSON log lines and lets a test wait for one.
type logTail struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	cond  *sync.Cond
	done  bool
}

func tailLogs(t *testing.T, r io.Reader) *logTail {
	lt := &logTail{}
	lt.cond = sync.NewCond(&lt.mu)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			err := json.Unmarshal(sc.Bytes(), &m)
			lt.mu.Lock()
			lt.raw = append(lt.raw, sc.Text())
			if err != nil {
				m = map[string]any{"NOT_JSON": sc.Text()}
			}
			lt.lines = append(lt.lines, m)
			lt.cond.Broadcast()
			lt.mu.Unlock()
		}
		lt.mu.Lock()
		lt.done = true
		lt.cond.Broadcast()
		lt.mu.Unlock()
	}()
	return lt
}

// waitFor returns the first line whose message is msg, or fails when the output ends or the
// deadline passes.
func (lt *logTail) waitFor(t *testing.T, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	timer := time.AfterFunc(timeout, func() { lt.mu.Lock(); lt.done = true; lt.cond.Broadcast(); lt.mu.Unlock() })
	defer timer.Stop()
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for i := 0; ; i++ {
		for ; i < len(lt.lines); i++ {
			if lt.lines[i]["message"] == msg {
				return lt.lines[i]
			}
		}
		if lt.done {
			t.Fatalf("no %q log line; got:\n%s", msg, strings.Join(lt.raw, "\n"))
		}
		lt.cond.Wait()
		i--
	}
}

func (lt *logTail) all() []map[string]any {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return append([]map[string]any(nil), lt.lines...)
}

// poll calls cond until it returns true or the timeout passes.
func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

const inventoryService = "shop.inventory.v1.InventoryService"

// The life of an instance against a fake control plane and a fake Consul agent: NOT_SERVING until
// the listener arrives, then SERVING and registered, business RPCs served by the xDS-managed
// server, and on SIGTERM NOT_SERVING, deregistered, exit 0.
func TestLifecycle(t *testing.T) {
	ads := startFakeADS(t)
	cons := startFakeConsul(t)
	dir := t.TempDir()
	bootstrap := filepath.Join(dir, "bootstrap.json")
	err := os.WriteFile(bootstrap, []byte(fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "inventory-test", "cluster": "inventory"},
		"server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%%s"
	}`, ads.addr)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary)
	cmd.Env = append(baseEnv(),
		"GRPC_XDS_BOOTSTRAP="+bootstrap,
		"CONSUL_HTTP_ADDR="+cons.addr,
		"MESH_DATA_DIR="+filepath.Join(dir, "data"),
		"MESH_INSTANCE_ID=inventory-test",
		"OTEL_TRACES_EXPORTER=none",
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when the process has ended; then exitErr is set
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logs := tailLogs(t, stdout)

	listening := logs.waitFor(t, "listening", 10*time.Second)
	port, adminPort := int(listening["port"].(float64)), int(listening["admin_port"].(float64))
	admin := dial(t, fmt.Sprintf("127.0.0.1:%d", adminPort))
	health := healthpb.NewHealthClient(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health check %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	for _, s := range []string{"", inventoryService} {
		if got := check(s); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("before the listener arrived: health(%q) = %v", s, got)
		}
	}
	if regs, _ := cons.calls(); len(regs) != 0 {
		t.Fatalf("registered before serving: %v", regs)
	}

	// Reflection on the admin port lists and describes the business service.
	refl, err := reflectionpb.NewServerReflectionClient(admin).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		listed = append(listed, s.GetName())
	}
	for _, want := range []string{inventoryService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(strings.Join(listed, " "), want) {
			t.Fatalf("reflection lists %v, missing %s", listed, want)
		}
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: inventoryService}}); err != nil {
		t.Fatal(err)
	}
	if rr, err = refl.Recv(); err != nil || len(rr.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("describe %s: %v %v", inventoryService, rr, err)
	}
	refl.CloseSend()

	// The control plane sends the listener: SERVING, then registered in Consul.
	ads.release()
	poll(t, "SERVING", 15*time.Second, func() bool { return check("") == healthpb.HealthCheckResponse_SERVING })
	if got := check(inventoryService); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health(%s) = %v", inventoryService, got)
	}
	poll(t, "registration", 10*time.Second, func() bool { regs, _ := cons.calls(); return len(regs) > 0 })
	regs, _ := cons.calls()
	wantReg := map[string]any{
		"ID": "inventory-test", "Name": "inventory", "Address": "127.0.0.1", "Port": float64(port),
		"Tags": []any{"v1", "go"},
		"Meta": map[string]any{"version": "v1", "language": "go", "admin_port": fmt.Sprint(adminPort)},
	}
	for k, v := range wantReg {
		if !reflect.DeepEqual(regs[0][k], v) {
			t.Errorf("registration %s = %#v, want %#v", k, regs[0][k], v)
		}
	}
	chk, _ := regs[0]["Check"].(map[string]any)
	wantCheck := map[string]any{"GRPC": fmt.Sprintf("127.0.0.1:%d", adminPort), "Interval": "1s", "Timeout": "1s", "DeregisterCriticalServiceAfter": "1m"}
	for k, v := range wantCheck {
		if chk[k] != v {
			t.Errorf("check %s = %v, want %v", k, chk[k], v)
		}
	}
	if tls, ok := chk["GRPCUseTLS"]; ok && tls != false {
		t.Errorf("GRPCUseTLS = %v", tls)
	}
	if nacks := ads.nackList(); len(nacks) > 0 {
		t.Fatalf("the server NACKed the listener: %v", nacks)
	}

	// The xDS-managed business port serves the InventoryService (plaintext: fallback creds).
	inv := inventoryv1.NewInventoryServiceClient(dial(t, fmt.Sprintf("127.0.0.1:%d", port)))
	stock, err := inv.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-grinder"})
	if err != nil || stock.GetAvailable() != 8 {
		t.Fatalf("GetStock = %v, %v; want 8 from the seed", stock, err)
	}

	// SIGTERM: NOT_SERVING (seen on a Watch), deregistered, exit 0.
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", first, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if next, err := watch.Recv(); err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch after SIGTERM: %v %v", next, err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("exit: %v; stderr: %s", exitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15 s of SIGTERM")
	}
	if _, dereg := cons.calls(); !reflect.DeepEqual(dereg, []string{"inventory-test"}) {
		t.Fatalf("deregistered %v, want [inventory-test]", dereg)
	}
	// Shutdown steps in the contract's order, and every line carries the contract's keys.
	var steps []string
	for _, l := range logs.all() {
		for _, k := range []string{"timestamp", "severity", "message", "service.name", "service.instance.id"} {
			if _, ok := l[k]; !ok {
				t.Fatalf("log line without %s: %v", k, l)
			}
		}
		switch m := l["message"]; m {
		case "shutting down", "deregistered from consul", "drained", "stopped":
			steps = append(steps, m.(string))
		}
	}
	if want := []string{"shutting down", "deregistered from consul", "drained", "stopped"}; !reflect.DeepEqual(steps, want) {
		t.Fatalf("shutdown steps %v, want %v", steps, want)
	}
}
