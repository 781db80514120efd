package mesh

// ServerListenerPrefix starts the name of every xDS server listener (the bootstrap's
// server_listener_resource_name_template, written by mesh/xds/bootstrap.py, is this plus %s);
// the rest is HOST:PORT. It is the name istiod gives a proxyless server's inbound listener.
const ServerListenerPrefix = "xds.istio.io/grpc/lds/inbound/"

// ServerListenerName is the listener the control plane must send before the server at
// hostPort serves.
func ServerListenerName(hostPort string) string { return ServerListenerPrefix + hostPort }
