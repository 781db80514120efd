package runtime

import (
	"net"
	"net/http"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Language is this runtime's language in Consul tags and metadata.
const Language = "go"

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
		},
		Check: &consul.AgentServiceCheck{
			GRPC:                           net.JoinHostPort(cfg.Host, strconv.Itoa(adminPort)),
			GRPCUseTLS:                     false,
			Interval:                       "1s",
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "30s",
		},
	}
}

// consulAgent is the part of the Consul agent API the runtime uses.
type consulAgent interface {
	ServiceRegisterOpts(*consul.AgentServiceRegistration, consul.ServiceRegisterOpts) error
	ServiceDeregister(string) error
}

func newConsulAgent(addr string, timeout time.Duration) (consulAgent, error) {
	c := consul.DefaultConfig()
	c.Address = addr
	c.HttpClient = &http.Client{Timeout: timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	client, err := consul.NewClient(c)
	if err != nil {
		return nil, err
	}
	return client.Agent(), nil
}
