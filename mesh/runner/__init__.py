"""The local runner behind `make up/status/logs/down`: one supervisor process that starts
Consul, Jaeger, the control plane and every instance, restarts crashed ones with backoff, and
stops them all by PID."""
