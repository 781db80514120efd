"""The mesh runtime every Python service starts with: config, logs, tracing, servers, Consul."""

from mesh.runtime import core_experiments  # noqa: F401  (first: before anything imports grpc)
