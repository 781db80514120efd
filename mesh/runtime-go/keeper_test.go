package mesh

// Registration and its keeper against a real `consul agent -dev` (it keeps no state, so a restart
// forgets every registration). The binary is $CONSUL_BIN or the repo's .tools/bin/consul; the
// tests fail, saying how to build it, when there is none.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func findConsul(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CONSUL_BIN"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../.tools/bin/consul")
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no consul binary at %s (%v): `make .tools/bin/consul` (or `make tools`) builds it, or set CONSUL_BIN", p, err)
	return ""
}

// devConsul is a `consul agent -dev` on 127.0.0.1 whose ports are all chosen free once, so that it
// can be stopped and started again on the same ones.
type devConsul struct {
	t      *testing.T
	bin    string
	dir    string
	http   int
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// freePort is a port free for both TCP and UDP on 127.0.0.1 (serf and DNS use both).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

func startDevConsul(t *testing.T) *devConsul {
	t.Helper()
	c := newDevConsul(t)
	c.start()
	return c
}

// newDevConsul chooses the agent's ports and writes its config; start runs it.
func newDevConsul(t *testing.T) *devConsul {
	t.Helper()
	c := &devConsul{t: t, bin: findConsul(t), dir: t.TempDir(), out: &syncBuffer{}}
	names := []string{"http", "grpc", "grpc_tls", "dns", "serf_lan", "serf_wan", "server"}
	seen := map[int]bool{}
	var ports []string
	for _, n := range names {
		p := freePort(t)
		for seen[p] {
			p = freePort(t)
		}
		seen[p] = true
		if n == "http" {
			c.http = p
		}
		ports = append(ports, fmt.Sprintf("  %s = %d", n, p))
	}
	hcl := `bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"
disable_update_check = true
ports {
` + strings.Join(ports, "\n") + "\n}\n"
	if err := os.WriteFile(filepath.Join(c.dir, "consul.hcl"), []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd != nil {
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

func (c *devConsul) addr() string { return "127.0.0.1:" + strconv.Itoa(c.http) }

// start runs the agent and waits until its HTTP API answers and it has a leader.
func (c *devConsul) start() {
	c.t.Helper()
	c.cmd = exec.Command(c.bin, "agent", "-dev", "-config-file", filepath.Join(c.dir, "consul.hcl"))
	c.cmd.Dir = c.dir
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	exited := make(chan struct{})
	c.exited = exited
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(c.cmd)
	poll(c.t, "consul up", 30*time.Second, func() bool {
		select {
		case <-exited:
			c.t.Fatalf("consul exited: %s", c.out.String())
		default:
		}
		var leader string
		return c.get("/v1/status/leader", &leader) == http.StatusOK && leader != ""
	})
}

// stop sends SIGTERM to the agent's PID and waits for it to exit.
func (c *devConsul) stop() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("consul did not exit within 15 s of SIGTERM: %s", c.out.String())
	}
	c.cmd = nil
}

// get decodes a JSON answer of the HTTP API into out; it returns the status code, 0 when down.
func (c *devConsul) get(path string, out any) int {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + c.addr() + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			c.t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return resp.StatusCode
}

// view is what the agent reports of a service and its check, without what changes on its own.
type view struct {
	Service map[string]any
	Check   map[string]any
}

func (c *devConsul) view(id string) (view, bool) {
	var v view
	if c.get("/v1/agent/service/"+id, &v.Service) != http.StatusOK {
		return v, false
	}
	var checks map[string]map[string]any
	if c.get("/v1/agent/checks", &checks) != http.StatusOK {
		return v, false
	}
	for _, ch := range checks {
		if ch["ServiceID"] == id {
			v.Check = ch
		}
	}
	return v, v.Check != nil
}

func (v view) stable() view {
	s := map[string]any{}
	for k, x := range v.Service {
		s[k] = x
	}
	ch := map[string]any{}
	for k, x := range v.Check {
		switch k {
		case "Status", "Output", "CreateIndex", "ModifyIndex":
		default:
			ch[k] = x
		}
	}
	return view{s, ch}
}

func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(message string) int {
	n := 0
	for _, line := range strings.Split(s.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == message {
			n++
		}
	}
	return n
}

// adminHealth is a health server answering SERVING, so that Consul's gRPC check passes only if it
// dials the address the registration names.
func adminHealth(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer()) // "" is SERVING
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().(*net.TCPAddr).Port
}

// register starts the runtime's registration (with its keeper) against the real agent, for an
// instance whose admin port is admin.
func register(t *testing.T, c *devConsul, id string, admin int) (*consulRegistration, *syncBuffer) {
	t.Helper()
	cfg := Config{ServiceName: "inventory", ServiceVersion: "v2", InstanceID: id, Host: "127.0.0.1", ConsulAddr: c.addr()}
	agent, err := newConsulAgent(cfg.ConsulAddr, cfg.ConsulToken, consulRequestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := NewLogger(logs, slog.LevelDebug, cfg.ServiceName, cfg.InstanceID)
	r := startConsulRegistration(context.Background(), agent, Registration(cfg, 7001, admin), cfg.ConsulAddr, log)
	t.Cleanup(r.stop)
	return r, logs
}

func TestKeeperReRegistersAfterConsulRestart(t *testing.T) {
	t.Parallel() // each runs a Consul of its own and mostly waits on it
	c := startDevConsul(t)
	const id = "inventory-keeper-a"
	admin := adminHealth(t)
	_, logs := register(t, c, id, admin)

	var before view
	poll(t, "first registration with a passing check", 15*time.Second, func() bool {
		v, ok := c.view(id)
		before = v
		return ok && v.Check["Status"] == "passing"
	})
	want := map[string]any{
		"Service": "inventory", "Address": "127.0.0.1", "Port": float64(7001),
		"Tags": []any{"v2", "go"},
		"Meta": map[string]any{"version": "v2", "language": "go", "protocol": "grpc", "admin_port": strconv.Itoa(admin)},
	}
	for k, w := range want {
		if !reflect.DeepEqual(before.Service[k], w) {
			t.Fatalf("service %s = %#v, want %#v", k, before.Service[k], w)
		}
	}
	if before.Check["Type"] != "grpc" || before.Check["Interval"] != "1s" || before.Check["Timeout"] != "1s" {
		t.Fatalf("check = %v", before.Check)
	}

	c.stop()
	// While Consul is down the keeper says so once, however many periods the outage lasts.
	poll(t, "outage warning", 3*KeepRegisteredEvery+time.Second, func() bool {
		return logs.count("consul unreachable at "+c.addr()+"; will register when it is back") == 1
	})
	time.Sleep(2 * KeepRegisteredEvery) // a longer outage: still one warning (checked below)
	c.start()
	back := time.Now()
	var after view
	poll(t, "re-registration", 10*time.Second, func() bool {
		v, ok := c.view(id)
		after = v
		return ok && v.Check["Status"] == "passing"
	})
	t.Logf("registered again %v after Consul was back", time.Since(back).Round(time.Millisecond))
	if !reflect.DeepEqual(after.stable(), before.stable()) {
		t.Fatalf("registration changed:\nbefore %v\nafter  %v", before.stable(), after.stable())
	}
	if n := logs.count("re-registered in Consul"); n != 1 {
		t.Fatalf("%d re-registered lines, want 1:\n%s", n, logs.String())
	}
	if n := logs.count("consul unreachable at " + c.addr() + "; will register when it is back"); n != 1 {
		t.Fatalf("%d outage warnings, want 1:\n%s", n, logs.String())
	}
}

func TestNoReRegistrationAfterStop(t *testing.T) {
	t.Parallel() // each runs a Consul of its own and mostly waits on it
	c := startDevConsul(t)
	const id = "inventory-keeper-b"
	r, logs := register(t, c, id, adminHealth(t))
	poll(t, "first registration", 15*time.Second, func() bool { _, ok := c.view(id); return ok })

	stopped := time.Now()
	r.stop() // keeper first, then deregistration: what the shutdown runs
	if d := time.Since(stopped); d > time.Second {
		t.Fatalf("stop took %v", d)
	}
	if code := c.get("/v1/agent/service/"+id, nil); code != http.StatusNotFound {
		t.Fatalf("after stop: GET service = %d, want 404", code)
	}
	c.stop()
	c.start()
	// Several keeper periods: a keeper still running would have registered again by now.
	deadline := time.Now().Add(4 * KeepRegisteredEvery)
	for time.Now().Before(deadline) {
		if code := c.get("/v1/agent/service/"+id, nil); code != http.StatusNotFound {
			t.Fatalf("GET service = %d after stop and a Consul restart, want 404", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := logs.count("re-registered in Consul"); n != 0 {
		t.Fatalf("re-registered after stop:\n%s", logs.String())
	}
}

// Consul down when the instance starts: one WARN, retries with backoff, and the registration once
// the agent is up.
func TestRegistersWhenConsulComesUpLater(t *testing.T) {
	t.Parallel() // each runs a Consul of its own and mostly waits on it
	c := newDevConsul(t) // ports chosen, agent not started
	const id = "inventory-late-consul"
	_, logs := register(t, c, id, adminHealth(t))
	warning := "consul unreachable at " + c.addr() + "; will register when it is back"
	poll(t, "warning that consul is unreachable", 5*time.Second, func() bool { return logs.count(warning) == 1 })
	time.Sleep(registerRetryMax) // several retries fail meanwhile: still one warning (checked below)
	c.start()
	poll(t, "registration once consul is up", 15*time.Second, func() bool { _, ok := c.view(id); return ok })
	if n := logs.count(warning); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
}
