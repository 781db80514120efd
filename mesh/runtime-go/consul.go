package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Language is this runtime's language in Consul tags and metadata.
const Language = "go"

// Protocol is what an instance of this runtime serves, in Consul metadata (the gateway writes http).
const Protocol = "grpc"

// Backoff of the first registration while Consul cannot be reached.
const (
	registerRetryFirst = 100 * time.Millisecond
	registerRetryMax   = 5 * time.Second
)

// Registration is the Consul service registration of the contract for one instance.
func Registration(cfg Config, port, adminPort int) *consul.AgentServiceRegistration {
	return &consul.AgentServiceRegistration{
		ID:      cfg.InstanceID,
		Name:    cfg.ServiceName,
		Address: cfg.Host,
		Port:    port,
		Tags:    []string{cfg.ServiceVersion, Language},
		Meta: map[string]string{
			"version":    cfg.ServiceVersion,
			"language":   Language,
			"admin_port": strconv.Itoa(adminPort),
			"protocol":   Protocol,
		},
		Check: &consul.AgentServiceCheck{
			GRPC:                           net.JoinHostPort(cfg.Host, strconv.Itoa(adminPort)),
			GRPCUseTLS:                     false,
			Interval:                       "1s",
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
}

// KeepRegisteredEvery is how often the keeper asks the local agent whether it still knows this
// instance. A `consul agent -dev` that restarts (or any agent that loses its state) forgets every
// registration; without re-registering, the instance would drop out of the mesh's endpoints.
const KeepRegisteredEvery = 2 * time.Second

// consulAgent is the part of the Consul agent API the runtime uses.
type consulAgent interface {
	ServiceRegisterOpts(*consul.AgentServiceRegistration, consul.ServiceRegisterOpts) error
	ServiceDeregister(string) error
	Service(string, *consul.QueryOptions) (*consul.AgentService, *consul.QueryMeta, error)
}

// newConsulAgent talks to the agent at addr with token ("" for none), whatever CONSUL_HTTP_*
// variables the process has (the Config has read them already).
func newConsulAgent(addr, token string, timeout time.Duration) (consulAgent, error) {
	c := consul.DefaultConfig()
	c.Address = addr
	c.Token, c.TokenFile = token, ""
	c.HttpClient = &http.Client{Timeout: timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	client, err := consul.NewClient(c)
	if err != nil {
		return nil, err
	}
	return client.Agent(), nil
}

// consulRegistration registers one instance in Consul and keeps it registered until stop.
type consulRegistration struct {
	agent  consulAgent
	body   *consul.AgentServiceRegistration
	addr   string // for logs
	log    *slog.Logger
	every  time.Duration
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	registered bool // the first registration succeeded
}

// startConsulRegistration registers body in the background, retrying while the agent is
// unreachable, and then re-registers the same body whenever the agent has forgotten it.
func startConsulRegistration(ctx context.Context, agent consulAgent, body *consul.AgentServiceRegistration, addr string, log *slog.Logger) *consulRegistration {
	ctx, cancel := context.WithCancel(ctx)
	r := &consulRegistration{agent: agent, body: body, addr: addr, log: log, every: KeepRegisteredEvery, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if r.registerUntilDone(ctx) {
			r.keep(ctx)
		}
	}()
	return r
}

// registerUntilDone is the first registration, retried with backoff while the agent cannot be
// reached (the instance serves meanwhile); the outage is logged once. False when ctx ended first.
func (r *consulRegistration) registerUntilDone(ctx context.Context) bool {
	warned := false
	for wait := registerRetryFirst; ; wait = min(2*wait, registerRetryMax) {
		err := r.agent.ServiceRegisterOpts(r.body, consul.ServiceRegisterOpts{}.WithContext(ctx))
		if err == nil {
			r.mu.Lock()
			r.registered = true
			r.mu.Unlock()
			r.log.Info("registered in consul", "consul", r.addr, "id", r.body.ID)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !warned {
			warned = true
			r.log.Warn(fmt.Sprintf("consul unreachable at %s; will register when it is back", r.addr),
				"consul", r.addr, "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// keep checks every r.every that the agent still knows the instance, and registers the same body
// again when it does not (404). An unreachable agent is logged once per outage.
func (r *consulRegistration) keep(ctx context.Context) {
	ticker := time.NewTicker(r.every)
	defer ticker.Stop()
	outage := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		_, _, err := r.agent.Service(r.body.ID, (&consul.QueryOptions{}).WithContext(ctx))
		var status consul.StatusError
		if errors.As(err, &status) && status.Code == http.StatusNotFound {
			err = r.agent.ServiceRegisterOpts(r.body, consul.ServiceRegisterOpts{}.WithContext(ctx))
			if err == nil {
				r.log.Info("re-registered in Consul", "consul", r.addr, "id", r.body.ID)
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !outage:
			outage = true
			r.log.Warn(fmt.Sprintf("consul unreachable at %s; will register when it is back", r.addr), "consul", r.addr, "error", err.Error())
		case err == nil && outage:
			outage = false
			r.log.Info(fmt.Sprintf("consul reachable again at %s", r.addr), "consul", r.addr)
		}
	}
}

// stop ends the keeper and waits for it (an in-flight request is cancelled, so this does not wait
// on Consul), then deregisters if the first registration succeeded. After stop nothing registers
// this instance again.
func (r *consulRegistration) stop() {
	r.cancel()
	<-r.done
	r.mu.Lock()
	registered := r.registered
	r.registered = false
	r.mu.Unlock()
	if !registered {
		return
	}
	if err := r.agent.ServiceDeregister(r.body.ID); err != nil {
		r.log.Warn("consul deregistration failed", "error", err.Error())
	} else {
		r.log.Info("deregistered from consul", "id", r.body.ID)
	}
}
