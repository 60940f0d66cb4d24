# vault-plugin-scanner. `make demo` runs the main job on a local Vault +
# Kubernetes API; `make test` runs every test (what .ci/run calls).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

PLUGIN  := vault-plugin-scanner
VERSION ?= v0.1.0
BIN     := $(CURDIR)/bin/$(PLUGIN)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

# A test-only build whose WAL rollback age is 5 s instead of 10 min, so the
# acceptance tests can watch rollback delete what a killed plugin left.
SHORTWAL_BIN := $(CURDIR)/bin/$(PLUGIN)-shortwal

# Loads the pinned tools (built and cached on first use) into the
# environment of the recipe line that uses it: all of them for the tests,
# only Vault, kube-apiserver, kubectl and etcd for the demo and benchmarks.
WITH_TOOLS := set -a; eval "$$(scripts/build-tools.sh)"; PLUGIN_BINARY=$(BIN); PLUGIN_VERSION=$(VERSION); PLUGIN_SHORTWAL_BINARY=$(SHORTWAL_BIN); set +a;
WITH_CORE_TOOLS := set -a; eval "$$(scripts/build-tools.sh --core)"; PLUGIN_BINARY=$(BIN); PLUGIN_VERSION=$(VERSION); set +a;

.PHONY: all build build-shortwal test unit acceptance fuzz tools demo dev bench fmt vet lint release clean

all: build

build:
	$(GO_BUILD) -o $(BIN) ./cmd/$(PLUGIN)

build-shortwal:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS) -X github.com/vault-plugin-scanner/vault-plugin-scanner/backend.walRollbackMinAgeSetting=5s" -o $(SHORTWAL_BIN) ./cmd/$(PLUGIN)

test: lint unit fuzz acceptance

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet ./...

# The plugin's own tests, then the checks that live in their own modules:
# the issuer against Kubernetes' JWT authenticator code (every signing
# algorithm) and the GitLab Runner driver.
unit:
	go test -race -count=1 ./...
	cd tools/authncheck && go vet ./... && go test -count=1 ./...
	cd tools/gitlab-vault-secrets && go vet ./... && go test -count=1 ./...

# A short run of each fuzz target on top of the committed seeds.
FUZZTIME ?= 10s
fuzz:
	for f in FuzzRoleWrite FuzzClusterWrite FuzzBuildKubeconfig FuzzTargets; do \
		go test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./backend || exit 1; \
	done

tools:
	scripts/build-tools.sh >/dev/null

acceptance: build build-shortwal
	$(WITH_TOOLS) cd tests/acceptance && go vet ./... && go test -count=1 -v -timeout 60m ./...

demo: build
	$(WITH_CORE_TOOLS) cd tests/acceptance && go run ./cmd/demo

dev: build
	$(WITH_CORE_TOOLS) cd tests/acceptance && go run ./cmd/demo -keep

# The in-process benchmarks, then the load generator against a local stack
# (docs/performance.md; BENCH_FLAGS=-quick for a short smoke run).
bench: build
	go test -run '^$$' -bench . -benchmem ./backend/
	$(WITH_CORE_TOOLS) cd tools/bench && go run . $(BENCH_FLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	go vet ./...

release:
	rm -rf dist && mkdir -p dist
	for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		GOOS=$$os GOARCH=$$arch $(GO_BUILD) -o dist/$(PLUGIN)_$(VERSION)_$${os}_$${arch} ./cmd/$(PLUGIN); \
	done
	cd dist && sha256sum $(PLUGIN)_* > SHA256SUMS && cat SHA256SUMS

clean:
	rm -rf bin dist
