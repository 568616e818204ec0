# Custos — the two commands a newcomer needs are `make run` and `make test`.
#
# Every Go command runs with GOTOOLCHAIN=go1.27.3: the modules declare go 1.27, and older
# toolchains carry known crypto/tls and net/http vulnerabilities. The go command fetches that
# toolchain from the module proxy on first use.
export GOTOOLCHAIN := go1.27.3

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

MODULES  := proto core encryption-service
PKGS     := $(foreach m,$(MODULES),github.com/custos-platform/custos/$(m)/...)
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# The race detector needs cgo and its C compiler (gcc or clang): with them the tests run with -race,
# without them they run without it, and say so. Evaluated only when the tests run.
RACE_FLAG = $(shell if [ "$$(GOTOOLCHAIN=$(GOTOOLCHAIN) go env CGO_ENABLED)" = 1 ] && \
  command -v "$$(GOTOOLCHAIN=$(GOTOOLCHAIN) go env CC | cut -d' ' -f1)" >/dev/null 2>&1; then echo -race; \
  else echo "make test: no C compiler for cgo (or CGO_ENABLED=0): testing without the race detector;" \
    "install gcc (Debian/Ubuntu: apt-get install -y build-essential) to use it" >&2; fi)
GOTEST_FLAGS ?= $(RACE_FLAG) -count=1 -timeout 15m

.PHONY: run test test-go proto proto-check lint build clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: ## start PostgreSQL (if needed) and both services with dev certificates; Ctrl-C stops all
	@"$(CURDIR)/scripts/run-dev.sh"

test: proto-check lint test-go ## everything CI checks: contracts, formatting, vet, all tests

test-go: ## the Go tests of every module, against a real PostgreSQL
	@url="$${TEST_DATABASE_URL:-$$(scripts/dev-postgres.sh)}"; \
	echo "make test: PostgreSQL at $$(printf '%s' "$$url" | sed -E 's#//([^:/@]+):[^@]*@#//\1:***@#')"; \
	TEST_DATABASE_URL="$$url" go test $(GOTEST_FLAGS) $(PKGS)

proto: ## regenerate Go, gRPC, gateway and OpenAPI code from proto/ (pinned, offline)
	@scripts/proto.sh gen

proto-check: ## fail when proto/ is unformatted, fails lint, breaks compatibility or generated code is stale
	@scripts/proto.sh check

lint: ## gofmt (the pinned toolchain's), go vet, golangci-lint (.golangci.yml) on every module, and the shared copies in sync
	@out="$$("$$(go env GOROOT)/bin/gofmt" -l $(MODULES))"; if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	@scripts/check-copies.sh
	@go vet $(PKGS)
	@$(MAKE) --no-print-directory golangci

build: ## build both service binaries and the custos CLI into bin/
	@mkdir -p bin
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/encryption-service ./encryption-service/cmd/encryption-service
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/core ./core/cmd/core
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/custos ./core/cmd/custos

clean: ## remove binaries and local runtime state (drops this checkout's dev database, stops the throwaway PostgreSQL)
	@scripts/run-dev.sh clean-db || true
	@scripts/dev-postgres.sh stop >/dev/null 2>&1 || true
	rm -rf bin .run

.PHONY: bench conformance

bench: ## measure the encryption service against gRPC and REST echo ceilings (~2 min; BENCH_FLAGS="-duration 3s")
	@url="$${BENCH_DATABASE_URL:-$$(scripts/dev-postgres.sh)}"; \
	BENCH_DATABASE_URL="$$url" go run ./encryption-service/cmd/es-bench $(BENCH_FLAGS)

conformance: ## run the conformance kit against CONFORMANCE_URL, or else the service of `make run` (.run/dev.env)
	@if [ -z "$${CONFORMANCE_URL:-}" ] && [ -f .run/dev.env ]; then \
	  source .run/dev.env; \
	  export CONFORMANCE_URL="$$CUSTOS_ES_URL" CONFORMANCE_CA_FILE="$$CUSTOS_CA_FILE" \
	    CONFORMANCE_CLIENT_CERT_FILE="$$CUSTOS_CLIENT_CERT_FILE" CONFORMANCE_CLIENT_KEY_FILE="$$CUSTOS_CLIENT_KEY_FILE" \
	    CONFORMANCE_TENANT_ID="$$CUSTOS_ES_TENANT_ID" CONFORMANCE_TENANT_SECRET="$$CUSTOS_ES_TENANT_SECRET" \
	    CONFORMANCE_ADMIN_TOKEN="$$CUSTOS_ES_ADMIN_TOKEN" CONFORMANCE_MASTER_KEY="$$(openssl rand -base64 32)"; \
	fi; \
	go test -count=1 -v -run '^TestConformance$$' ./encryption-service/conformance

.PHONY: vuln golangci

vuln: ## govulncheck every module against an offline database built from golang.org/x/vulndb (pinned; ~15 s warm)
	@scripts/vuln.sh

golangci: ## golangci-lint v2 with gosec on every module (.golangci.yml); part of `lint`
	@scripts/tools.sh golangci-lint
	@"$$(scripts/tools.sh --print)/golangci-lint" run ./proto/... ./core/... ./encryption-service/...
