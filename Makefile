# The two commands a newcomer needs are `make run` and `make test`; the rest serve them.
SHELL := bash
GO ?= go
BIN := bin/loopze-certs
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2 # staticcheck 2026.2.2

.PHONY: build run test test-unit lint openapi bench fuzz clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/server

run: build
	@echo "Sign in to the web UI at http://$${LOOPZE_ADDR:-127.0.0.1:8080}/ with a token from:"
	@echo "  $(BIN) token --tenant default --role admin --sub $${USER:-operator}"
	$(BIN) serve

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# make test-unit: the packages whose tests need no PostgreSQL (no testdb, apitest or
# embedded cluster), in seconds, on a machine without the server binaries.
UNIT_PKGS = $(shell $(GO) list -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./... \
	| grep -v -e /internal/testdb -e /internal/apitest -e /internal/pgembed | cut -d' ' -f1)
test-unit:
	$(GO) test -count=1 $(UNIT_PKGS)

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	scripts/lint-openapi
	scripts/check-alerts

openapi:
	$(GO) run ./cmd/server openapi -format yaml -o openapi/openapi.yaml

# make bench: load, latency and scale scenarios against the real server, with raw-PostgreSQL
# baselines measured in the same run (docs/performance.md), then the micro-benchmarks of the
# hot pieces. BENCH_QUICK=1 runs the one-minute smoke version.
BENCH_QUICK ?=
BENCH_TIME := $(if $(filter-out 0,$(BENCH_QUICK)),100ms,1s)
bench:
	BENCH_QUICK=$(BENCH_QUICK) $(GO) run ./bench
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) ./internal/material ./internal/envelope ./internal/resolver ./nodetls

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzInspect -fuzztime 30s -fuzzminimizetime 2s ./internal/material
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s -fuzzminimizetime 2s ./internal/material
	$(GO) test -run '^$$' -fuzz FuzzPBES2Params -fuzztime 30s -fuzzminimizetime 2s ./internal/material
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 30s -fuzzminimizetime 2s ./internal/envelope

clean:
	rm -rf bin
