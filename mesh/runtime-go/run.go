package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/xds"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // could not start (bind, xDS bootstrap, service setup, ...)
	ExitConfig  = 2 // bad configuration
)

// Timeouts of the lifecycle that are not configuration.
const (
	consulRequestTimeout = 5 * time.Second
	tracingFlushTimeout  = 5 * time.Second
)

// Service is what a service supplies to the runtime: its default name and a setup function.
type Service struct {
	// Name is the default of OTEL_SERVICE_NAME.
	Name string
	// Setup opens the service's resources and registers its gRPC services on reg. The returned
	// cleanup (may be nil) runs once the servers have stopped.
	Setup func(ctx context.Context, env *Env, reg grpc.ServiceRegistrar) (cleanup func() error, err error)
}

// Main runs svc with the process environment and exits with Run's code.
func Main(svc Service) {
	os.Exit(Run(svc, os.Getenv, os.Stdout, os.Stderr))
}

// Run is the life of an instance (docs/runtime-contract.md) until SIGTERM or SIGINT; it returns
// the exit code. gRPC reads GRPC_XDS_BOOTSTRAP from the process environment itself.
func Run(svc Service, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := LoadConfig(svc.Name, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", svc.Name, err)
		return ExitConfig
	}
	log := NewLogger(stdout, cfg.LogLevel, cfg.ServiceName, cfg.InstanceID)
	InstallGRPCLogger(log)

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	shutdownTracing, err := SetupTracing(ctx, cfg)
	if err != nil {
		log.Error("cannot set up tracing", "error", err.Error())
		return ExitFailure
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
		defer cancel()
		if err := shutdownTracing(fctx); err != nil {
			log.Warn("tracing shutdown", "error", err.Error())
		}
	}()

	inst, err := start(ctx, svc, cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return ExitFailure
	}
	code := inst.serve(ctx)
	inst.stop()
	log.Info("stopped", "exit_code", code)
	return code
}

// businessServer is what the instance needs of its business server: an xDS-managed one, or with
// MESH_XDS off a plain *grpc.Server.
type businessServer interface {
	grpc.ServiceRegistrar
	GetServiceInfo() map[string]grpc.ServiceInfo
	Serve(net.Listener) error
	Stop()
	GracefulStop()
}

// instance holds the servers of one running instance.
type instance struct {
	cfg   Config
	log   *slog.Logger
	biz   businessServer
	admin *grpc.Server
	// adminCleanup releases what the admin services hold (CSDS watches the xDS clients).
	adminCleanup func()
	health       *health.Server
	names        []string // business service names
	cleanup      func() error

	bizAddr, adminAddr *net.TCPAddr
	serveErr           chan error
	modeMu             sync.Mutex
	mode               connectivity.ServingMode // latest report of the xDS listener
	modeChanged        chan struct{}            // capacity 1: "mode has a new value"

	consul *consulRegistration // set by serve once SERVING (same goroutine as stop)
}

func start(ctx context.Context, svc Service, cfg Config, log *slog.Logger) (_ *instance, err error) {
	inst := &instance{
		cfg:         cfg,
		log:         log,
		serveErr:    make(chan error, 2),
		modeChanged: make(chan struct{}, 1),
		health:      health.NewServer(),
	}
	options := []grpc.ServerOption{
		grpc.StatsHandler(ServerStatsHandler()),
		grpc.ChainUnaryInterceptor(UnaryErrorInterceptor(log)),
		grpc.ChainStreamInterceptor(StreamErrorInterceptor(log)),
	}
	options = append(options, injectedFailures(cfg, log)...)
	if cfg.XDS {
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("xDS server credentials: %w", err)
		}
		inst.biz, err = xds.NewGRPCServer(append(options, grpc.Creds(creds), xds.ServingModeCallback(inst.onServingMode))...)
		if err != nil {
			return nil, fmt.Errorf("xDS server: %w", err)
		}
	} else {
		// MESH_XDS off: a plain server that serves at once (the Envoy sidecar does TLS and policy).
		inst.biz = grpc.NewServer(options...)
		inst.mode = connectivity.ServingModeServing
		inst.modeChanged <- struct{}{}
	}
	defer func() {
		if err != nil {
			inst.biz.Stop()
		}
	}()
	inst.cleanup, err = svc.Setup(ctx, &Env{Config: cfg, Log: log}, inst.biz)
	if err != nil {
		return nil, fmt.Errorf("service setup: %w", err)
	}
	defer func() {
		if err != nil && inst.cleanup != nil {
			_ = inst.cleanup()
		}
	}()
	inst.names = slices.Sorted(maps.Keys(inst.biz.GetServiceInfo()))

	inst.admin, inst.adminCleanup, err = newAdminServer(inst.health, inst.biz)
	if err != nil {
		return nil, err
	}
	inst.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)

	bizLis, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("business port: %w", err)
	}
	adminLis, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.AdminPort)))
	if err != nil {
		bizLis.Close()
		return nil, fmt.Errorf("admin port: %w", err)
	}
	inst.bizAddr = bizLis.Addr().(*net.TCPAddr)
	inst.adminAddr = adminLis.Addr().(*net.TCPAddr)
	go func() { inst.serveErr <- serveErr("admin", inst.admin.Serve(adminLis)) }()
	go func() { inst.serveErr <- serveErr("business", inst.biz.Serve(bizLis)) }()
	waiting := "none (MESH_XDS off)"
	if cfg.XDS {
		waiting = ServerListenerName(inst.bizAddr.String())
	}
	log.Info("listening", "port", inst.bizAddr.Port, "admin_port", inst.adminAddr.Port, "services", inst.names,
		"waiting_for_listener", waiting)
	return inst, nil
}

func serveErr(which string, err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("%s server: %w", which, err)
}

// onServingMode is gRPC's report of the xDS listener: SERVING once the control plane has sent a
// valid listener for our address (until then connections are accepted by the kernel and closed).
func (inst *instance) onServingMode(addr net.Addr, args xds.ServingModeChangeArgs) {
	listener := ServerListenerName(addr.String())
	if args.Err != nil {
		inst.log.Warn("xDS serving mode", "listener", listener, "mode", args.Mode.String(), "error", args.Err.Error())
	} else {
		inst.log.Info("xDS serving mode", "listener", listener, "mode", args.Mode.String())
	}
	inst.modeMu.Lock()
	inst.mode = args.Mode
	inst.modeMu.Unlock()
	select {
	case inst.modeChanged <- struct{}{}:
	default: // a signal is already pending; serve() will read the latest mode
	}
}

func (inst *instance) setHealth(s healthpb.HealthCheckResponse_ServingStatus) {
	inst.health.SetServingStatus("", s)
	for _, n := range inst.names {
		inst.health.SetServingStatus(n, s)
	}
}

// serve waits for the xDS listener, goes SERVING, registers in Consul and runs until ctx ends.
func (inst *instance) serve(ctx context.Context) int {
	serving, registering := false, false
	for {
		select {
		case <-ctx.Done():
			inst.log.Info("shutting down", "reason", "signal")
			return ExitOK
		case err := <-inst.serveErr:
			if err != nil {
				inst.log.Error("server failed", "error", err.Error())
				return ExitFailure
			}
		case <-inst.modeChanged:
			inst.modeMu.Lock()
			mode := inst.mode
			inst.modeMu.Unlock()
			if mode != connectivity.ServingModeServing {
				if serving {
					inst.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
				}
				serving = false
				continue
			}
			if serving {
				continue
			}
			serving = true
			inst.setHealth(healthpb.HealthCheckResponse_SERVING)
			inst.log.Info("serving", "port", inst.bizAddr.Port, "admin_port", inst.adminAddr.Port)
			if inst.cfg.Register && !registering {
				registering = true
				if agent, err := newConsulAgent(inst.cfg.ConsulAddr, inst.cfg.ConsulToken, consulRequestTimeout); err != nil {
					inst.log.Error("consul client", "error", err.Error())
				} else {
					reg := Registration(inst.cfg, inst.bizAddr.Port, inst.adminAddr.Port)
					inst.consul = startConsulRegistration(ctx, agent, reg, inst.cfg.ConsulAddr, inst.log)
				}
			}
		}
	}
}

// stop is the contract's shutdown: NOT_SERVING, deregister, drain with a deadline, then force.
// Tracing is flushed by Run afterwards.
func (inst *instance) stop() {
	inst.health.Shutdown() // NOT_SERVING for every service, and no later change
	if inst.consul != nil {
		inst.consul.stop() // the keeper ends first: nothing re-registers after the deregistration
	}

	drained := make(chan struct{})
	go func() {
		inst.biz.GracefulStop()
		close(drained)
	}()
	timer := time.NewTimer(inst.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
		inst.log.Info("drained")
	case <-timer.C:
		inst.log.Warn("drain timeout; stopping in-flight RPCs", "drain_timeout_s", inst.cfg.DrainTimeout.Seconds())
		inst.biz.Stop()
		<-drained
	}
	inst.admin.Stop() // health Watch streams never end by themselves
	inst.adminCleanup()
	if inst.cleanup != nil {
		if err := inst.cleanup(); err != nil {
			inst.log.Warn("service cleanup", "error", err.Error())
		}
	}
}
