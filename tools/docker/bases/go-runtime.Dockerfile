# Local stand-in for debian:bookworm-slim, the Go services' run-time base: the minbase itself.
ARG BASE
FROM ${BASE}
