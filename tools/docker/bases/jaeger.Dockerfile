# Jaeger v2.13.0 (built from its Go module by `make tools`) on Debian bookworm: a stand-in for
# jaegertracing/jaeger:2.13.0 where that cannot be pulled, with the same entrypoint path and user.
# Unlike the official image it has no web UI (a Go build does not embed the UI assets); the query
# API (/api/v3) and OTLP receivers are the same. No arguments: the all-in-one default (memory).
ARG BASE
FROM ${BASE}
COPY jaeger /cmd/jaeger/jaeger-linux
USER 10001
EXPOSE 4317 4318 16686 13133
ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]
