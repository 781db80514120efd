"""The mesh runtime every Python service starts with: config, logs, tracing, servers, Consul."""
