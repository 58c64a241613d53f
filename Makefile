# paaskit's Makefile. A newcomer on a fresh Debian machine runs two commands:
#
#   make demo   the platform on loopback, on embedded defaults
#   make test   everything, against real PostgreSQL and Redis servers
#
# Both install the system packages they need first (scripts/install-deps.sh,
# idempotent and quiet).

GO       ?= go
GOFLAGS  ?=
export GOFLAGS
# go test's own timeout per package; the whole suite stays well under 20 min.
TEST_TIMEOUT ?= 12m
# Test binaries run at once. Many of the suite's tests wait (on servers
# restarting, lease expiries, timeouts they provoke) rather than compute,
# so twice the core count keeps the cores busy; go test's default is one
# per core.
TEST_PARALLEL ?= $(shell echo $$(( $$(nproc) * 2 )))
# go test starts packages in the order given: the longest first, so none
# of them is left running alone at the end while the other cores idle.
TEST_PACKAGES ?= ./runner ./upload/pyinstall ./pty ./zmqloop ./lock ./upload ./balancer ./...

.PHONY: all deps demo-deps bench-deps build demo test fmt-check tidy-check vet unit bench clean

all: build

deps:
	@scripts/install-deps.sh --test

demo-deps:
	@scripts/install-deps.sh --demo

bench-deps:
	@scripts/install-deps.sh --bench

build: demo-deps
	$(GO) build ./...

## demo: run the reference platform on loopback (Ctrl-C stops it). As root
## the apps run in full sandboxes; otherwise the platform says what is off.
demo: demo-deps
	$(GO) build -o bin/platform ./examples/platform
	bin/platform

## test: gofmt, go vet and the race-enabled suite against real servers.
test: deps tidy-check fmt-check vet
	$(GO) run ./internal/cmd/withservers $(GO) test -race -count=1 -p $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) $(TEST_PACKAGES)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## tidy-check: go.mod and go.sum are what `go mod tidy` would write.
tidy-check:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

vet:
	$(GO) vet ./...

## bench: the side-by-side comparisons against peers, printed as a table.
bench: bench-deps
	bench/compare.sh

clean:
	rm -rf bin bench/results
