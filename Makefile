# Weft build and test entry points. `make demo` and `make test` are the two
# commands a newcomer needs; both install what they need on first use.
GO        ?= go
BIN       := bin
WEFT      := $(BIN)/weft
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/weftmesh/weft/pkg/cli.Version=$(VERSION) -X github.com/weftmesh/weft/pkg/cli/proxycmd.Version=$(VERSION)
TEST_TIMEOUT ?= 25m

.PHONY: all deps build web wasm-examples test test-short vet fmt-check demo quickstart-check bench bench-controlplane bench-proxy bench-wasm fuzz clean

all: build

# bin/weft-proxy is the proxy-only build of the same command, which
# `weft proxy` runs in its place (pkg/cli/proxycmd); built second, so it is
# not older than bin/weft, and without cgo (no C library mapped).
build: web wasm-examples
	$(GO) build -ldflags "$(LDFLAGS)" -o $(WEFT) ./cmd/weft
	CGO_ENABLED=0 $(GO) build -tags weftproxy -ldflags "$(LDFLAGS)" -o $(BIN)/weft-proxy ./cmd/weft

# The dashboard SPA (web/) is built with npm into pkg/dashboard/dist, which
# is embedded with go:embed. The built dist is committed so `go build ./...`
# works on a fresh clone without Node; `make web` rebuilds it only when a web/
# source is newer than dist/index.html (the stamp).
WEB_SRCS := $(shell find web/src -type f 2>/dev/null) web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json
WEB_STAMP := pkg/dashboard/dist/index.html

web: $(WEB_STAMP)

# When web/ has no uncommitted changes the committed dist matches it, so a
# failed npm step (no npm, offline npm ci) only warns.
$(WEB_STAMP): $(WEB_SRCS)
	@if command -v npm >/dev/null 2>&1 && WEFT_DEPS=web bash hack/install-deps.sh && (cd web && npm run build); then \
	  touch $(WEB_STAMP); \
	elif git diff --quiet HEAD -- web 2>/dev/null; then \
	  echo "warning: could not build web/ with npm; using the committed pkg/dashboard/dist (matches web/)"; touch $(WEB_STAMP); \
	else echo "error: web/ has changes but npm could not build it"; exit 1; fi

# proxy-wasm example plugins (examples/wasm, its own Go module) built to
# bin/wasm/NAME.wasm; make rebuilds one only when a source under
# examples/wasm changed, and go's build cache keeps rebuilds cheap.
WASM_EXAMPLES := go-header go-deny go-trap go-response go-body go-tick go-callout go-trailers
WASM_SRCS := $(shell find examples/wasm -name '*.go' -o -name go.mod 2>/dev/null)

# The seed's plugin in AssemblyScript (examples/wasm/assemblyscript), built
# with npm like the dashboard: npm ci runs only when package-lock.json changed
# (sha256 stamp in node_modules); the built module is committed, so without
# npm an unchanged source only warns and the committed build is used.
AS_DIR  := examples/wasm/assemblyscript
AS_WASM := $(AS_DIR)/build/header.wasm
AS_SRCS := $(wildcard $(AS_DIR)/assembly/*.ts) $(AS_DIR)/package.json $(AS_DIR)/package-lock.json

wasm-examples: $(patsubst %,$(BIN)/wasm/%.wasm,$(WASM_EXAMPLES)) $(AS_WASM)

$(AS_WASM): $(AS_SRCS)
	@if command -v npm >/dev/null 2>&1 && (cd $(AS_DIR) && sum=$$(sha256sum package-lock.json | cut -d' ' -f1) && \
	    { [ -d node_modules ] && [ "$$(cat node_modules/.weft-lock-sha256 2>/dev/null)" = "$$sum" ] || \
	      { npm ci --no-audit --no-fund && echo "$$sum" > node_modules/.weft-lock-sha256; }; } && npm run build); then \
	  touch $(AS_WASM); \
	elif git diff --quiet HEAD -- $(AS_DIR) 2>/dev/null; then \
	  echo "warning: could not build $(AS_DIR) with npm; using the committed $(AS_WASM)"; touch $(AS_WASM); \
	else echo "error: $(AS_DIR) has changes but npm could not build it"; exit 1; fi

$(BIN)/wasm/%.wasm: $(WASM_SRCS)
	@mkdir -p $(BIN)/wasm
	cd examples/wasm && GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $(CURDIR)/$@ ./$*

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^vendor/')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# What the tests need (iptables, chromium, haproxy, prometheus, etcd, a
# kube-apiserver and helm built into .cache/bin, npm packages): installed on
# first use, a quick no-op afterwards, so `make test` works on a fresh machine.
deps:
	@bash hack/install-deps.sh

# All tests, including end-to-end tests that start real processes.
test: deps build fmt-check vet
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./...

test-short:
	$(GO) test -short -count=1 ./...

# DEMO_FLAGS passes flags to `weft demo`, e.g. DEMO_FLAGS="--load 20" or,
# non-interactively, DEMO_FLAGS="--base-port 0 --exit-after 30s".
DEMO_FLAGS ?=
demo: build
	./$(WEFT) demo $(DEMO_FLAGS)

# The README's quick start, taken literally from README.md, run in a fresh
# clone of this repository's HEAD (hack/quickstart-check.sh; a few minutes).
quickstart-check:
	bash hack/quickstart-check.sh

bench: bench-controlplane bench-proxy

# proxy-wasm: p50 latency a header plugin (Go and AssemblyScript) adds to a
# request through a real proxy vs no plugin in the same run, and the memory
# of one plugin instance (pkg/proxy/filter/wasm/bench_test.go).
bench-wasm: wasm-examples
	$(GO) test -run '^$$' -bench 'WasmAddedLatency|InstanceMemory' -benchtime 1x -timeout 10m ./pkg/proxy/filter/wasm/

# Control-plane scale benchmark: 1000 services translated by the real
# translator, 5000 ADS clients in 4 child processes, then the translator's
# own 1000-service benchmark (pkg/xds/server/README.md lists the
# WEFT_BENCH_* knobs, e.g. WEFT_BENCH_SYNTHETIC=1, WEFT_BENCH_EGRESS=100).
bench-controlplane:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./pkg/xds/...

# Data-plane benchmark: pkg/proxy micro-benchmarks, then direct vs two weft
# sidecars vs two HAProxy hops under fortio (test/bench). BENCH_DURATION
# (default 60s) shortens the constant-rate runs, e.g. BENCH_DURATION=10s.
bench-proxy: build
	@WEFT_DEPS=bench bash hack/install-deps.sh
	@[ "$$(.cache/bin/fortio version 2>/dev/null)" = 1.68.2 ] || GOBIN=$(CURDIR)/.cache/bin $(GO) install fortio.org/fortio@v1.68.2
	@rc=0; $(GO) test -run '^$$' -bench . -benchmem ./pkg/proxy/... || rc=1; \
	WEFT_BIN=$(CURDIR)/$(WEFT) FORTIO_BIN=$(CURDIR)/.cache/bin/fortio $(GO) run ./test/bench/cmd/benchproxy || rc=1; \
	exit $$rc

# Longer fuzzing of parsers and validators (make test runs each seed corpus only).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeValidate -fuzztime $(FUZZTIME) ./pkg/config/
	$(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime $(FUZZTIME) ./pkg/proxy/listener/
	$(GO) test -run '^$$' -fuzz FuzzCompileEval -fuzztime $(FUZZTIME) ./pkg/telemetry/expr/
	$(GO) test -run '^$$' -fuzz FuzzHeadLines -fuzztime $(FUZZTIME) ./pkg/proxy/internal/httpwire/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./pkg/proxy/peerexchange/

clean:
	rm -rf $(BIN)
