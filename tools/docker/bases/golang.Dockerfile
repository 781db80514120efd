# Local stand-in for golang:1.26-bookworm: this machine's Go toolchain (the build context is its
# GOROOT) on Debian bookworm. Builds fetch modules from the Go module proxy.
ARG BASE
FROM ${BASE}
COPY . /usr/local/go
ENV PATH=/usr/local/go/bin:/root/go/bin:$PATH GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
