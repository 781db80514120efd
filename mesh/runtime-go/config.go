package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Environment variables of the runtime contract (docs/runtime-contract.md), with their defaults.
// Standard names (OTEL_*, GRPC_XDS_BOOTSTRAP, CONSUL_HTTP_ADDR) are used where they exist.
const (
	EnvServiceName     = "OTEL_SERVICE_NAME"           // default: the service's own name
	EnvServiceVersion  = "MESH_SERVICE_VERSION"        // default: DefaultServiceVersion
	EnvInstanceID      = "MESH_INSTANCE_ID"            // default: NAME-<pid>
	EnvNamespace       = "MESH_NAMESPACE"              // default: DefaultNamespace
	EnvHost            = "MESH_HOST"                   // default: DefaultHost
	EnvPort            = "MESH_PORT"                   // default: 0 (any free port)
	EnvAdminPort       = "MESH_ADMIN_PORT"             // default: 0 (any free port)
	EnvServicePorts    = "MESH_SERVICE_PORTS"          // name=port,...; default: none
	EnvCallTimeout     = "MESH_CALL_TIMEOUT"           // seconds; default: DefaultCallTimeout
	EnvPropagate       = "MESH_PROPAGATE_HEADERS"      // header names, comma-separated; default: DefaultPropagate
	EnvDataDir         = "MESH_DATA_DIR"               // default: DefaultDataDir
	EnvDrainTimeout    = "MESH_DRAIN_TIMEOUT"          // seconds; default: DefaultDrainTimeout
	EnvLogLevel        = "MESH_LOG_LEVEL"              // debug, info, warn, error; default: info
	EnvRegister        = "MESH_REGISTER"               // default: true
	EnvInjectFailure   = "MESH_INJECT_FAILURE_PERCENT" // 0 to 100; default: 0
	EnvInjectDelay     = "MESH_INJECT_DELAY_MS"        // 0 to MaxInjectDelayMs; default: 0
	EnvConsulAddr      = "CONSUL_HTTP_ADDR"            // default: DefaultConsulAddr
	EnvConsulToken     = "CONSUL_HTTP_TOKEN"           // default: none
	EnvConsulTokenFile = "CONSUL_HTTP_TOKEN_FILE"      // a file holding the token; default: none
	EnvXDS             = "MESH_XDS"                    // off: plain gRPC under an Envoy sidecar; default: true
	EnvXDSBootstrap    = "GRPC_XDS_BOOTSTRAP"          // required unless MESH_XDS is off
	EnvOTLPEndpoint    = "OTEL_EXPORTER_OTLP_ENDPOINT" // default: DefaultOTLPEndpoint
	EnvTracesExporter  = "OTEL_TRACES_EXPORTER"        // otlp or none; default: otlp
)

// Defaults of the runtime contract.
const (
	DefaultServiceVersion = "v1"
	DefaultNamespace      = "default"
	DefaultHost           = "127.0.0.1"
	DefaultCallTimeout    = 5 * time.Second
	DefaultPropagate      = "x-user-tier"
	DefaultDataDir        = "data"
	DefaultDrainTimeout   = 5 * time.Second
	DefaultConsulAddr     = "127.0.0.1:8500"
	DefaultOTLPEndpoint   = "http://127.0.0.1:4317"
	DefaultTracesExporter = "otlp"
)

// MaxInjectDelayMs bounds MESH_INJECT_DELAY_MS (an hour: it is for demos and tests).
const MaxInjectDelayMs = 3_600_000

// Config is the instance's configuration, parsed once at start. Treat it as read-only.
type Config struct {
	ServiceName    string
	ServiceVersion string
	InstanceID     string
	Namespace      string
	Host           string
	Port           int
	AdminPort      int
	// ServicePorts is the service port of every mesh service this instance calls, by name.
	ServicePorts map[string]int
	// CallTimeout bounds an outbound call made without an incoming deadline.
	CallTimeout time.Duration
	// PropagateHeaders are the request headers copied from an incoming call to its outbound calls.
	PropagateHeaders []string
	DataDir          string
	DrainTimeout     time.Duration
	LogLevel         slog.Level
	Register         bool
	// InjectFailurePercent and InjectDelay are the injected failures (injection.go); 0: none.
	InjectFailurePercent int
	InjectDelay          time.Duration
	ConsulAddr           string
	// ConsulToken is Consul's ACL token ("" for none), from CONSUL_HTTP_TOKEN or the file
	// CONSUL_HTTP_TOKEN_FILE names. A secret: never logged.
	ConsulToken string
	// XDS false (MESH_XDS off): a plain business server and DNS targets, for an Envoy sidecar.
	XDS            bool
	XDSBootstrap   string // "" when XDS is false and GRPC_XDS_BOOTSTRAP is unset
	OTLPEndpoint   string
	TracesExporter string // "otlp" or "none"
}

// ConfigError lists every bad variable; its message is the contract's one line.
type ConfigError struct {
	Problems []string // "NAME: reason", in the order the variables are read
}

func (e *ConfigError) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// LoadConfig reads the contract's variables through getenv (os.Getenv in production). It returns a
// *ConfigError naming every bad variable, not only the first. Messages match mesh/runtime/config.py.
func LoadConfig(defaultServiceName string, getenv func(string) string) (Config, error) {
	p := &parser{getenv: getenv}
	c := Config{}
	c.ServiceName = p.str(EnvServiceName, defaultServiceName)
	c.XDS = p.boolean(EnvXDS, true)
	c.ServiceVersion = p.str(EnvServiceVersion, DefaultServiceVersion)
	c.InstanceID = p.str(EnvInstanceID, fmt.Sprintf("%s-%d", c.ServiceName, os.Getpid()))
	c.Namespace = p.str(EnvNamespace, DefaultNamespace)
	c.Host = p.str(EnvHost, DefaultHost)
	c.Port = p.port(EnvPort)
	c.AdminPort = p.port(EnvAdminPort)
	c.ServicePorts = p.servicePorts(EnvServicePorts)
	c.CallTimeout = p.seconds(EnvCallTimeout, DefaultCallTimeout)
	c.PropagateHeaders = p.headerNames(EnvPropagate, DefaultPropagate)
	c.DataDir = p.str(EnvDataDir, DefaultDataDir)
	c.DrainTimeout = p.seconds(EnvDrainTimeout, DefaultDrainTimeout)
	c.LogLevel = p.level(EnvLogLevel)
	c.Register = p.boolean(EnvRegister, true)
	c.InjectFailurePercent = p.integer(EnvInjectFailure, 0, 0, 100)
	c.InjectDelay = time.Duration(p.integer(EnvInjectDelay, 0, 0, MaxInjectDelayMs)) * time.Millisecond
	c.ConsulAddr = p.str(EnvConsulAddr, DefaultConsulAddr)
	c.ConsulToken = p.consulToken(EnvConsulToken, EnvConsulTokenFile)
	c.XDSBootstrap = p.str(EnvXDSBootstrap, "")
	if c.XDSBootstrap == "" && c.XDS {
		p.bad(EnvXDSBootstrap, "required")
	}
	c.OTLPEndpoint = p.str(EnvOTLPEndpoint, DefaultOTLPEndpoint)
	c.TracesExporter = p.choice(EnvTracesExporter, DefaultTracesExporter, "otlp", "none")
	if len(p.problems) > 0 {
		return Config{}, &ConfigError{Problems: p.problems}
	}
	return c, nil
}

// IsConfigError reports whether err is a configuration error (exit code 2).
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// maxSeconds bounds the timeouts so that they cannot overflow a time.Duration.
const maxSeconds = 3600

type parser struct {
	getenv   func(string) string
	problems []string
}

func (p *parser) bad(name, reason string) { p.problems = append(p.problems, name+": "+reason) }

// str returns the trimmed value, or def when the variable is unset or blank.
func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

// consulTokenPattern: printable ASCII without spaces, as it travels in the X-Consul-Token header.
var consulTokenPattern = regexp.MustCompile(`^[\x21-\x7e]+$`)

// consulToken returns Consul's ACL token as Consul's own CLI takes it: the value of name, or the
// contents of the file fileName names (read once, here); "" for none. A problem never shows the secret.
func (p *parser) consulToken(name, fileName string) string {
	value, path, source := p.str(name, ""), p.str(fileName, ""), name
	if value != "" && path != "" {
		p.bad(fileName, name+" is set too; give one")
		return ""
	}
	if path != "" {
		source = fileName
		data, err := os.ReadFile(path)
		if err != nil {
			p.bad(fileName, fmt.Sprintf("cannot read %q", path))
			return ""
		}
		if value = strings.TrimSpace(string(data)); value == "" {
			p.bad(fileName, fmt.Sprintf("%q is empty", path))
			return ""
		}
	}
	if value != "" && !consulTokenPattern.MatchString(value) {
		p.bad(source, "not a token (printable ASCII, no spaces)")
		return ""
	}
	return value
}

func (p *parser) port(name string) int { return p.integer(name, 0, 0, 65535) }

// integer returns the value, which must be an integer from low to high, or def when unset.
func (p *parser) integer(name string, def, low, high int) int {
	raw := p.str(name, strconv.Itoa(def))
	n, err := strconv.Atoi(raw)
	switch {
	case err != nil:
		p.bad(name, fmt.Sprintf("not an integer: %q", raw))
	case n < low || n > high:
		p.bad(name, fmt.Sprintf("must be between %d and %d: %d", low, high, n))
	default:
		return n
	}
	return def
}

func (p *parser) seconds(name string, def time.Duration) time.Duration {
	raw := p.str(name, "")
	if raw == "" {
		return def
	}
	f, err := strconv.ParseFloat(raw, 64)
	switch {
	case err != nil:
		p.bad(name, fmt.Sprintf("not a number of seconds: %q", raw))
	case !(f > 0):
		p.bad(name, "must be > 0: "+raw)
	case f > maxSeconds:
		p.bad(name, fmt.Sprintf("must be at most %d", maxSeconds))
	default:
		return time.Duration(f * float64(time.Second))
	}
	return def
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func (p *parser) level(name string) slog.Level {
	return logLevels[p.choice(name, "info", "debug", "info", "warn", "error")]
}

// choice returns the lower-cased value, which must be one of choices.
func (p *parser) choice(name, def string, choices ...string) string {
	raw := p.str(name, "")
	if raw == "" {
		return def
	}
	if v := strings.ToLower(raw); slices.Contains(choices, v) {
		return v
	}
	p.bad(name, fmt.Sprintf("must be one of %s: %q", strings.Join(choices, ", "), raw))
	return def
}

func (p *parser) boolean(name string, def bool) bool {
	raw := p.str(name, "")
	switch strings.ToLower(raw) {
	case "":
		return def
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	p.bad(name, fmt.Sprintf("not a boolean (true/false): %q", raw))
	return def
}

// servicePorts reads `name=port,...`. Every bad entry is reported, quoted as written; blanks
// between commas are ignored.
func (p *parser) servicePorts(name string) map[string]int {
	ports := map[string]int{}
	for _, entry := range strings.Split(p.str(name, ""), ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		service, rawPort, ok := strings.Cut(entry, "=")
		service, rawPort = strings.TrimSpace(service), strings.TrimSpace(rawPort)
		port, err := strconv.Atoi(rawPort)
		switch {
		case !ok || service == "":
			p.bad(name, fmt.Sprintf("%q: not name=port", entry))
		case err != nil || port < 1 || port > 65535:
			p.bad(name, fmt.Sprintf("%q: not a port", entry))
		case ports[service] != 0:
			p.bad(name, fmt.Sprintf("%q: %s given twice", entry, service))
		default:
			ports[service] = port
		}
	}
	return ports
}

// headerName is a lower-case gRPC metadata key.
var headerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// headerNames reads comma-separated lower-case header names (MESH_PROPAGATE_HEADERS); gRPC's own
// (grpc-*) and binary (*-bin) headers are refused. Every bad name is reported, quoted as written.
func (p *parser) headerNames(name, def string) []string {
	var names []string
	for _, entry := range strings.Split(p.str(name, def), ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
		case !headerName.MatchString(entry):
			p.bad(name, fmt.Sprintf("%q: not a lower-case header name", entry))
		case strings.HasPrefix(entry, "grpc-") || strings.HasSuffix(entry, "-bin"):
			p.bad(name, fmt.Sprintf("%q: grpc-* and *-bin headers are not propagated", entry))
		case slices.Contains(names, entry):
			p.bad(name, fmt.Sprintf("%q: given twice", entry))
		default:
			names = append(names, entry)
		}
	}
	return names
}
