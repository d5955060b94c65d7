# tenantcloud: see README.md. Every target works offline except for the Go module proxy.
SHELL := /usr/bin/env bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/tenantcloud/tenantcloud/pkg/version.Version=$(VERSION)
PROGRAMS := ccm csi-controller csi-node autoscaler-provider adopt
# Integration tests start real apiservers; keep them from running in parallel with each other
# on a 2-core machine. -race everywhere: the components are concurrent by nature (informer
# handlers, in-flight guards, worker queues) and the e2e suites drive them hard.
TEST_FLAGS ?= -race -count=1 -timeout=25m -p=2

.PHONY: all build bin images testdeps test unit lint vet fmt fuzz bench sandbox demo clean

all: lint build test

# Static (CGO_ENABLED=0), as make images builds them: the same flags share one Go build cache,
# so CI's make images does not compile every package again.
build: ## the four programs and adopt into bin/ (static)
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(PROGRAMS))

bin: ## harness binaries and CRDs into bin/ (cached by version)
	./hack/bin.sh

testdeps: ## the Debian packages the tests run (as root: installs them; else prints the apt-get line)
	./hack/testdeps.sh

# A test that cannot run its real parts here (no root, no loop devices, a binary not built)
# skips, or fails for every need TENANTCLOUD_REQUIRE names (test/harness/require.go): CI
# demands them all. testsummary lists every skipped test at the end.
TENANTCLOUD_REQUIRE ?= $(if $(filter true,$(CI)),all)
export TENANTCLOUD_REQUIRE

# Images: <REGISTRY>/<name>:<VERSION> for our programs, the upstream versions for the CSI
# sidecars and cluster-autoscaler, into bin/images (an OCI layout, values.yaml for helm -f,
# images.txt with digests and sizes). Needs the upstream binaries `make bin` builds.
REGISTRY ?= ghcr.io/tenantcloud
PUSH ?=

images: bin ## OCI images of the four programs, the CSI sidecars and cluster-autoscaler into bin/images (REGISTRY=… PUSH=1 pushes)
	VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' REGISTRY='$(REGISTRY)' PUSH='$(PUSH)' ./hack/images.sh

test: testdeps bin ## every test: unit, harness, simulator and e2e on real apiservers
	set -o pipefail; $(GO) test -json $(TEST_FLAGS) ./... | $(GO) run ./hack/testsummary

unit: ## tests that need no harness
	$(GO) test -count=1 -short ./pkg/... ./cmd/...

lint: fmt vet

FUZZTIME ?= 20000x

fuzz: ## every Go fuzz target under pkg/ for FUZZTIME each (executions, CI: 20000x; or a duration: make fuzz FUZZTIME=5m)
	./hack/fuzz.sh $(FUZZTIME)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Scenario benchmarks live beside the code they drive (bench/, test/e2e/, cmd/); each reports its
# own figures (p50/p99, API calls, RSS) and benchtable turns them into one Markdown table.
BENCH_PKGS ?= ./bench/... ./pkg/... ./test/e2e/... ./cmd/...
BENCH_FLAGS ?= -run='^$$' -bench=. -skip='^BenchmarkScaleUp100$$' -benchtime=20x -timeout=30m
# Scenarios minutes long per iteration run once, in a second pass (bench/README.md).
BENCH_SLOW ?= -run='^$$' -bench='^BenchmarkScaleUp100$$' -benchtime=1x -timeout=30m ./test/e2e/autoscaler

bench: bin ## scenario benchmarks → bench/results/latest.md (see bench/README.md)
	@mkdir -p bench/results
	$(GO) test $(BENCH_FLAGS) $(BENCH_PKGS) 2>&1 | tee bench/results/raw.txt
	$(GO) test $(BENCH_SLOW) 2>&1 | tee -a bench/results/raw.txt
	$(GO) run ./bench/cmd/benchtable < bench/results/raw.txt > bench/results/latest.md
	@cat bench/results/latest.md

SANDBOX_FLAGS ?=

# The sandbox runs the programs from the images only (helm-installed charts), so bin/ccm etc.
# (make build) are not needed.
sandbox: images ## tenantcloud as deployed on one machine, with the user stories (needs root; see test/sandbox)
	$(GO) run ./test/sandbox $(SANDBOX_FLAGS)

demo: sandbox ## alias

clean:
	rm -rf bin/
