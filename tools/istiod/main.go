// istiod-local: istiod's own server (istio.io/istio/pilot/pkg/bootstrap) for a mesh of local
// processes. Istio config (VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy,
// and the registry: ServiceEntry, WorkloadEntry) comes from folders of YAML, watched; there is no
// Kubernetes: the server gets istiod's in-memory fake client, as its own bootstrap tests do
// (stock `pilot-discovery --configDir` panics without one; platform-findings.md).
//
// It serves plaintext xDS on --grpc-addr and GET /ready (200 once caches are synced) on
// --http-addr, every listener on loopback; logs JSON lines to stdout; SIGTERM/SIGINT stop it.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"istio.io/istio/pilot/pkg/bootstrap"
	"istio.io/istio/pilot/pkg/config/kube/file"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/log"
)

type dirs []string

func (d *dirs) String() string     { return strings.Join(*d, ",") }
func (d *dirs) Set(v string) error { *d = append(*d, v); return nil }

const domain = "cluster.local"

func main() {
	var configDirs dirs
	flag.Var(&configDirs, "config-dir", "a folder of Istio YAML, read recursively and watched (repeatable)")
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:15010", "plaintext xDS (ADS) address")
	httpAddr := flag.String("http-addr", "127.0.0.1:15016", "HTTP address: /ready and istiod's /debug endpoints")
	monitoringAddr := flag.String("monitoring-addr", "127.0.0.1:0", "metrics address (0: any free loopback port)")
	namespace := flag.String("namespace", "istio-system", "istiod's own namespace")
	workDir := flag.String("work-dir", "", "folder istiod may write to (its self-signed CA's files); default: the current one")
	flag.Parse()

	opts := log.DefaultOptions()
	opts.JSONEncoding = true
	if err := log.Configure(opts); err != nil {
		fail("configuring logs: %v", err)
	}
	if len(configDirs) == 0 {
		fail("at least one --config-dir is needed")
	}
	for _, a := range []string{*grpcAddr, *httpAddr, *monitoringAddr} {
		if !loopback(a) {
			fail("%s is not a loopback address: istiod-local binds loopback only", a)
		}
	}
	if *workDir != "" {
		if err := os.MkdirAll(*workDir, 0o700); err != nil {
			fail("%v", err)
		}
		if err := os.Chdir(*workDir); err != nil {
			fail("%v", err)
		}
	}

	args := bootstrap.NewPilotArgs(func(p *bootstrap.PilotArgs) {
		p.Namespace = *namespace
		p.ServerOptions = bootstrap.DiscoveryServerOptions{
			HTTPAddr:       *httpAddr,
			GRPCAddr:       *grpcAddr,
			MonitoringAddr: *monitoringAddr,
			// no secure xDS port and no webhook port: clients here speak plaintext xDS on loopback
			TLSOptions: bootstrap.TLSOptions{TLSMinVersion: bootstrap.TLSMinVersion1_2},
		}
		p.RegistryOptions.FileDir = configDirs[0]
		p.RegistryOptions.KubeOptions.DomainSuffix = domain
		p.ShutdownDuration = time.Second
	})
	if err := args.Complete(); err != nil {
		fail("%v", err)
	}
	// The first folder is istiod's FileDir; every further one is one more file-backed config store,
	// aggregated with it like istiod aggregates its stores.
	var extra []*file.Controller
	for _, dir := range configDirs[1:] {
		c, err := file.NewController(dir, domain, collections.Pilot, args.RegistryOptions.KubeOptions)
		if err != nil {
			fail("reading %s: %v", dir, err)
		}
		extra = append(extra, c)
	}

	started := time.Now()
	server, err := bootstrap.NewServer(args, func(s *bootstrap.Server) {
		setKubeClient(s, kube.NewFakeClient())
		for _, c := range extra {
			s.ConfigStores = append(s.ConfigStores, c)
		}
	})
	if err != nil {
		fail("creating istiod: %v", err)
	}
	stop := make(chan struct{})
	if err := server.Start(stop); err != nil {
		fail("starting istiod: %v", err)
	}
	log.Infof("istiod-local serving xDS on %s, /ready on http://%s/ready, config from %s (started in %s)",
		*grpcAddr, *httpAddr, configDirs.String(), time.Since(started).Round(time.Millisecond))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	got := <-signals
	log.Infof("istiod-local: %v, stopping", got)
	close(stop)
	server.WaitUntilCompletion()
}

// setKubeClient gives the server a Kubernetes client before NewServer looks for one (it keeps the
// one it is given). The field is unexported; istiod's own tests set it from inside the package, we
// set it through reflection, the one place this program reaches into istiod.
func setKubeClient(s *bootstrap.Server, client kube.Client) {
	field := reflect.ValueOf(s).Elem().FieldByName("kubeClient")
	if !field.IsValid() {
		fail("this istio.io/istio has no bootstrap.Server.kubeClient field")
	}
	reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem().Set(reflect.ValueOf(client))
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "istiod-local: "+format+"\n", args...)
	os.Exit(1)
}
