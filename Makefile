# polymesh: `make up` starts the whole mesh, `make test` runs every test. Both install what
# they need first (pinned), and reuse it on the next run.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

CONSUL_VERSION := v1.22.3
JAEGER_VERSION := v1.76.0 (v2.13.0)
ISTIO_VERSION := v0.0.0-20260827124520-eed52ebb66ad (the Istio 1.31 line)
KUBERNETES_VERSION := v1.34.2
ETCD_VERSION := v3.6.16
KUSTOMIZE_VERSION := v5.8.2
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/proto/node_modules/.bin/buf
TOOLS := .tools/bin
export GOFLAGS := -buildvcs=false
export GOTOOLCHAIN := local

say = @printf '\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  make logs service=NAME    logs of one service or instance"
	@echo "  make scenario name=NAME   e.g. make scenario name=outlier-detection (istio/README.md lists them)"

# --- installs (each is a file target: a second run reuses it) ----------------------------------
$(VENV)/.installed: pyproject.toml requirements.lock
	$(call say,Python venv with pinned packages)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test,lint]'
	@# xds-protos ships an old copy of opentelemetry/proto that overwrites opentelemetry-proto's
	@# files (its exporter then fails to import): reinstall the real one last.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
		"opentelemetry-proto==$$(grep -i '^opentelemetry-proto==' requirements.lock | cut -d= -f3)"
	touch $@

$(TOOLS)/consul: tools/consul/go.mod tools/consul/go.sum
	$(call say,building Consul $(CONSUL_VERSION) from its Go module (first time: a few minutes))
	tools/go-tool tools/consul $@ -trimpath github.com/hashicorp/consul

$(TOOLS)/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	$(call say,building Jaeger $(JAEGER_VERSION) from its Go module (first time: a few minutes))
	tools/go-tool tools/jaeger $@ -trimpath github.com/jaegertracing/jaeger/cmd/jaeger

$(TOOLS)/istioctl: tools/istioctl/go.mod tools/istioctl/go.sum
	$(call say,building istioctl $(ISTIO_VERSION) from its Go module (first time: a few minutes))
	tools/go-tool tools/istioctl $@ -trimpath istio.io/istio/istioctl/cmd/istioctl

# istiod's own server (tools/istiod/main.go), for `MESH_CONTROL_PLANE=istiod make up` and
# tests/istiod only: not part of `make tools`. A cold build takes minutes and near 3 GB of memory;
# GOMAXPROCS=2 keeps it to this machine's two cores.
$(TOOLS)/istiod-local: tools/istiod/go.mod tools/istiod/go.sum tools/istiod/main.go
	$(call say,building istiod-local: istiod $(ISTIO_VERSION) from its Go module, files for config, no Kubernetes (first time: minutes))
	GOMAXPROCS=2 tools/go-tool tools/istiod $@ -trimpath .

$(TOOLS)/compose-check: tools/compose-check/go.mod tools/compose-check/go.sum tools/compose-check/main.go
	$(call say,building compose-check: Docker Compose's own loader (compose-go) on docker-compose.yml)
	tools/go-tool tools/compose-check $@ -trimpath .

# Kubernetes for tests/kubernetes only (no kubelet: objects are accepted and stored, no pod runs)
KUBE_TOOLS := $(TOOLS)/kube-apiserver $(TOOLS)/kubectl $(TOOLS)/etcd $(TOOLS)/kustomize
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBERNETES_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBERNETES_VERSION)
$(TOOLS)/kube-apiserver $(TOOLS)/kubectl &: tools/kubernetes/go.mod tools/kubernetes/go.sum
	$(call say,building kube-apiserver and kubectl $(KUBERNETES_VERSION) from k8s.io/kubernetes (first time: about 8 min))
	tools/go-tool tools/kubernetes $(TOOLS)/ -trimpath -ldflags '$(KUBE_LDFLAGS)' \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

$(TOOLS)/etcd: tools/etcd/go.mod tools/etcd/go.sum
	$(call say,building etcd $(ETCD_VERSION) from its Go module (first time: about 3 min))
	tools/go-tool tools/etcd $@ -trimpath go.etcd.io/etcd/server/v3

.PHONY: kube-tools
kube-tools: $(KUBE_TOOLS) $(TOOLS)/istioctl ## Build what tests/kubernetes needs: kube-apiserver, kubectl, etcd, kustomize (cold: about 10 min)

$(TOOLS)/kustomize: tools/kustomize/go.mod tools/kustomize/go.sum
	$(call say,building kustomize $(KUSTOMIZE_VERSION) from its Go module)
	tools/go-tool tools/kustomize $@ -trimpath sigs.k8s.io/kustomize/kustomize/v5

$(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc &: tools/protoc-gen/go.mod tools/protoc-gen/go.sum
	$(call say,building protoc-gen-go and protoc-gen-go-grpc)
	tools/go-tool tools/protoc-gen $(TOOLS)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

tools/proto/node_modules/.installed: tools/proto/package.json tools/proto/package-lock.json
	$(call say,buf and ts-proto from npm)
	@# `npm install`, not `npm ci`: the registry here lacks buf's macOS/Windows binary packages, so
	@# the lock cannot list them and `npm ci` refuses it. Versions are exact in package.json.
	cd tools/proto && npm install --no-audit --no-fund --loglevel=error
	touch $@

PROTO_TOOLS := $(VENV)/.installed $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc tools/proto/node_modules/.installed

.PHONY: tools
tools: $(VENV)/.installed $(TOOLS)/consul $(TOOLS)/jaeger $(TOOLS)/istioctl $(TOOLS)/compose-check $(PROTO_TOOLS) ## Install and build every tool (pinned)

# --- our own builds -------------------------------------------------------------------------------
# --- Go ---
# Every Go module is built and tested by the same rules: the runtime library (mesh/runtime-go), each
# service with a go.mod and a cmd/NAME (built to .build/NAME) and the conformance probe (built to
# .build/conformance-go). A new Go service needs no rule here.
GO_RUNTIME := mesh/runtime-go
GO_PROBE := tests/conformance/probes/go
GO_SERVICES := $(foreach m,$(wildcard services/*/go.mod),$(if $(wildcard $(dir $(m))cmd/$(notdir $(m:/go.mod=))/*.go),$(notdir $(m:/go.mod=))))
GO_MODULES := $(GO_RUNTIME) $(addprefix services/,$(GO_SERVICES)) $(GO_PROBE)
GO_BINARIES := $(addprefix .build/,$(GO_SERVICES)) .build/conformance-go
# What a Go binary is built from: its own module, the runtime and the generated code.
go_sources = $(shell find $(1) $(GO_RUNTIME) gen/go -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.json' 2>/dev/null)

define go_service_rule
.build/$(1): $$(call go_sources,services/$(1))
	$$(call say,building $(1) (Go))
	cd services/$(1) && go build -o ../../$$@ ./cmd/$(1)
endef
$(foreach service,$(GO_SERVICES),$(eval $(call go_service_rule,$(service))))

.build/conformance-go: $(call go_sources,$(GO_PROBE))
	$(call say,building the Go conformance probe)
	cd $(GO_PROBE) && go build -o ../../../../$@ .

.PHONY: build-go
build-go: $(GO_BINARIES) ## Build every Go service and the Go conformance probe

.PHONY: test-go
test-go: build-go $(TOOLS)/consul ## Test every Go module (the runtime's tests use the real Consul; make lint vets them)
	$(call say,Go tests: $(GO_MODULES))
	for module in $(GO_MODULES); do (cd $$module && go test ./...); done

# --- TypeScript ---
# npm workspaces (root package.json): one install, one hoisted node_modules, so there is one copy of
# @grpc/grpc-js (the xDS resolver registers into it); patches/ are applied by the root postinstall.
# A new TypeScript service is one more entry in "workspaces": no rule here changes.
TS_WORKSPACES := $(shell node -p "require('./package.json').workspaces.join(' ')" 2>/dev/null)
TS_SOURCES := $(shell find $(TS_WORKSPACES) gen/ts -name '*.ts' -not -path '*/node_modules/*' -not -path '*/dist/*' 2>/dev/null) \
	$(wildcard tsconfig*.json $(addsuffix /tsconfig.json,$(TS_WORKSPACES)) $(addsuffix /package.json,$(TS_WORKSPACES)))

node_modules/.installed: package.json package-lock.json $(wildcard patches/*.patch)
	$(call say,npm workspaces: $(TS_WORKSPACES))
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.build/ts.built: node_modules/.installed $(TS_SOURCES)
	$(call say,building TypeScript (tsc -b, strict))
	npm run --silent build --workspaces
	@mkdir -p $(@D)
	touch $@

.PHONY: build-ts
build-ts: .build/ts.built

.PHONY: test-ts
test-ts: build-ts
	$(call say,TypeScript tests)
	npm test --workspaces --if-present

# --- all of it ---

.PHONY: build
build: $(VENV)/.installed $(TOOLS)/consul $(TOOLS)/jaeger build-go build-ts ## Build everything the mesh runs

# --- contracts ------------------------------------------------------------------------------------
.PHONY: proto
proto: $(PROTO_TOOLS) ## Format, lint and regenerate code for every language from protos/ (and Istio's API)
	$(BUF) format -w
	$(BUF) lint
	rm -rf gen/python/shop gen/python/polymesh gen/python/istio gen/ts gen/go/shop gen/go/polymesh
	$(BUF) generate
	@# Istio's networking and security messages, Python only (third_party/istio-api/README.md)
	$(BUF) generate --template buf.gen.istio.yaml
	@# google.rpc for TypeScript only (Python and Go take it from googleapis-common-protos / genproto)
	$(BUF) generate --template buf.gen.ts-rpc.yaml

.PHONY: breaking
breaking: $(VENV)/.installed tools/proto/node_modules/.installed ## Check protos/ against main for breaking changes and explain each in plain words
	@# our contracts only (protos/); vendored third-party files follow their upstreams, and a
	@# whole-workspace check fails whenever a vendored module is added ("3 images, against 2").
	@# tools/proto/breaking.py runs buf breaking and says, per finding, what old peers see and the usual fix.
	@$(PY) tools/proto/breaking.py

# --- lint -----------------------------------------------------------------------------------------
# Every language's static checks, in the order a contract change flows: protos, then the code in
# Python, Go and TypeScript. `make test` runs it first. Versions: buf in tools/proto, ruff and mypy
# (and the stub packages) in pyproject.toml's lint extra and requirements.lock.
# Go: every module we write (GO_MODULES, the generated code and the xDS probe; tools/ only pins
# upstreams' modules).
GO_LINT_MODULES := $(GO_MODULES) gen/go tests/xds/probes/go
.PHONY: lint
lint: $(PROTO_TOOLS) node_modules/.installed ## Lint every language: buf (protos), ruff and mypy --strict on mesh/ (Python), go vet, tsc (strict)
	$(call say,protos: buf lint and buf format)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(call say,Python: ruff check)
	$(VENV)/bin/ruff check --quiet .
	$(call say,Python: mypy --strict on mesh/)
	$(VENV)/bin/mypy
	$(call say,Go: go vet in $(GO_LINT_MODULES))
	for module in $(GO_LINT_MODULES); do (cd $$module && go vet ./...); done
	$(call say,TypeScript: tsc -b (strict: tsconfig.base.json) over $(TS_WORKSPACES))
	node_modules/.bin/tsc -b

# --- the mesh -------------------------------------------------------------------------------------
# Local processes by default (fast); MESH_RUNTIME=compose runs docker-compose.yml instead, and
# up, down, status and logs then act on that stack (README "Run with Docker").
MESH_RUNTIME ?= local
COMPOSE := docker compose --project-directory . -f docker-compose.yml
COMPOSE_ENV := set -a; [ ! -f .build/docker-bases.env ] || . .build/docker-bases.env; set +a;
.PHONY: up down status logs
ifeq ($(MESH_RUNTIME),compose)
up: compose-up ## Start the whole mesh and wait until every instance is healthy
down: compose-down ## Stop every process the mesh started
status: compose-status ## Show every instance, its health, restarts and chaos overrides
logs: compose-logs ## Show recent logs (make logs service=NAME for one)
else
up: build
	$(PY) -m mesh.runner up

down:
	@if [ -x $(PY) ]; then $(PY) -m mesh.runner down; else echo "nothing to stop"; fi

status:
	@$(PY) -m mesh.runner status

logs:
	@$(PY) -m mesh.runner logs $(if $(service),--service $(service)) $(if $(follow),--follow)
endif

.PHONY: compose-file compose-up compose-down compose-status compose-logs
compose-file: $(VENV)/.installed ## Write docker-compose.yml from the topology (mesh/runner/topology.py)
	$(PY) -m mesh.runner compose --write

compose-up: $(VENV)/.installed images ## Build the images and start docker-compose.yml, waiting until every container is healthy
	@$(PY) -m mesh.runner compose --check
	@$(COMPOSE_ENV) $(COMPOSE) up --detach --wait --wait-timeout 300
	@$(COMPOSE_ENV) $(COMPOSE) ps

compose-down: ## Stop docker-compose.yml's stack and remove its containers, network and volume
	@$(COMPOSE_ENV) $(COMPOSE) down --volumes --remove-orphans

compose-status: ## The compose stack's containers and their health
	@$(COMPOSE_ENV) $(COMPOSE) ps --all

compose-logs: ## The compose stack's logs (service=NAME for one, follow=1 to follow)
	@$(COMPOSE_ENV) $(COMPOSE) logs $(if $(follow),--follow) $(service)

.PHONY: token
TOKEN_ARGS = $(if $(user),--user $(user)) $(if $(ttl),--ttl $(ttl))
ifeq ($(MESH_RUNTIME),compose)
token: ## Print a development token for the gateway: user=NAME (default developer), ttl=SECONDS (default 3600)
	@$(COMPOSE_ENV) $(COMPOSE) run --rm --no-deps -e MESH_RUN_DIR=/mesh mesh-acl python -m mesh.auth token $(TOKEN_ARGS)
else
token: $(VENV)/.installed
	@$(PY) -m mesh.auth token $(TOKEN_ARGS)
endif

# --- traffic scenarios and chaos (istio/README.md) ------------------------------------------------
.PHONY: scenario
scenario: ## Apply scenario name=NAME to the running mesh, drive traffic, show what users see (no name: list)
	@$(PY) -m mesh.runner scenario $(name)

.PHONY: scenario-traffic
scenario-traffic: ## Drive the traffic of the applied scenario name=NAME again and count
	@$(PY) -m mesh.runner scenario $(name) --traffic-only

.PHONY: scenario-off
scenario-off: ## Take every scenario off: the defaults of istio/ and no chaos overrides
	@$(PY) -m mesh.runner scenario --off

.PHONY: chaos
chaos: ## Restart instance=NAME (or every instance of a service) with fail=PERCENT and/or delay=MS injected
	@$(PY) -m mesh.runner chaos $(instance) $(if $(fail),--fail-percent $(fail)) $(if $(delay),--delay-ms $(delay))

.PHONY: chaos-off
chaos-off: ## Take the chaos overrides off instance=NAME (no instance: every one)
	@$(PY) -m mesh.runner chaos $(instance) --off

# --- tests ----------------------------------------------------------------------------------------
# Headless Chromium for the `meshctl trace --html` tests: Debian's package at the version pinned in the
# script; nothing when one is on the PATH; never fatal (not root with apt: those tests skip and say why).
.PHONY: chromium
chromium: ## Install headless Chromium for the browser tests (Debian's pinned package; a no-op when present)
	@tools/chromium/install

.PHONY: test
test: build chromium $(PROTO_TOOLS) $(TOOLS)/istioctl $(TOOLS)/compose-check $(KUBE_TOOLS) $(TOOLS)/istiod-local ## Run every test: lint, contracts, istioctl, Go, TypeScript, Python (unit, conformance, control plane, Kubernetes API, end to end, and under real istiod)
	@# independent and mostly waiting (the Go keeper tests on Consul): side by side, each one's output whole
	$(MAKE) -j3 --output-sync=target lint breaking test-go test-ts
	$(call say,Python tests: the conformance modules that mostly wait on their probes, two at a time)
	$(PY) -m pytest -n 2 --dist loadfile $(SIDE_BY_SIDE_TESTS)
	$(call say,Python tests: the rest)
	$(PY) -m pytest --durations=30 $(addprefix --ignore=,$(SIDE_BY_SIDE_TESTS))
	$(call say,the end-to-end tests that apply under real istiod)
	$(MAKE) test-istiod

# Conformance modules whose tests mostly wait (a probe starting, Consul, a certificate's rotation):
# `make test` runs them on two pytest-xdist workers, a module per worker (tests/support/ports.py gives
# each worker ports of its own). The timing-sensitive route timeouts run alone, with the rest.
SIDE_BY_SIDE_TESTS := tests/conformance/test_runtime_contract.py tests/conformance/test_mtls.py \
	tests/conformance/test_authorization.py

# The shop under real istiod (tools/istiod): the end-to-end tests that apply, on a mesh the e2e fixture
# starts with MESH_CONTROL_PLANE=istiod. `make test` runs them last (istiod-local is a heavy build, made once).
ISTIOD_TESTS := tests/e2e/test_shop.py tests/e2e/test_traces.py tests/e2e/test_traffic_split.py \
	tests/e2e/test_traffic_headers.py tests/e2e/test_zero_trust.py tests/e2e/test_traffic_faults.py \
	tests/e2e/test_traffic_retries.py tests/e2e/test_traffic_circuit_breaker.py \
	tests/e2e/test_traffic_timeouts.py tests/e2e/test_traffic_outliers.py tests/e2e/test_traffic_invalid_edit.py
.PHONY: test-istiod
test-istiod: build $(TOOLS)/istiod-local ## The shop, its trace, traffic policy (split, headers, faults, retries, circuit breaker, timeouts, outliers, invalid edits), mTLS/RBAC under real istiod
	MESH_CONTROL_PLANE=istiod $(PY) -m pytest $(ISTIOD_TESTS)

# --- benchmarks -----------------------------------------------------------------------------------
.PHONY: compare-control-planes
compare-control-planes: build $(TOOLS)/istiod-local ## The whole e2e suite under ours and under real istiod, side by side (~10 min)
	$(PY) -m benchmarks.control_planes

.PHONY: bench-controlplane
bench-controlplane: $(VENV)/.installed $(TOOLS)/consul ## Control plane at scale: push latency, CPU, RSS, stuck clients, before/after (~15 min)
	$(PY) -m benchmarks.controlplane

# Its Go and Node xDS probes are built as the tests build them (tests/support/xds_probes.py: an
# incremental go build to .build/xds-probe-go, npm ci when their node_modules is missing or stale).
.PHONY: bench-mtls
bench-mtls: build $(TOOLS)/consul ## mTLS against plaintext per server language: p50, p99, new connections (~1 min)
	$(PY) -m benchmarks.mtls

.PHONY: bench-propagation
bench-propagation: $(VENV)/.installed $(TOOLS)/consul ## Istio edit / instance kill -> Python, Go, Node xDS clients: p50, p99 (~1 min)
	$(PY) -m benchmarks.propagation

.PHONY: clean
clean: down ## Remove builds and run state (keeps the tool builds in .tools)
	rm -rf .build .run services/pricing/dist mesh/runtime-ts/dist tests/conformance/probes/ts/dist

# --- Docker images (README "Run with Docker") -----------------------------------------------------
# Base images: the Dockerfiles' public defaults, or the local ones tools/docker/prepare-engine made
# on a machine that cannot pull them (.build/docker-bases.env). Docker's layer cache makes a second
# run take seconds.
.PHONY: images
images: $(VENV)/.installed ## Build every image (polymesh/NAME:dev): the services and the control plane
	tools/docker/build-images
