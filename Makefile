# pgcoord: `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
SQLC_VERSION := v1.31.1
# sqlc builds from source with cgo (a few minutes), so it is kept out of the
# library's go.mod and cached outside the tree, one binary per version.
TOOLS_BIN ?= $(HOME)/.cache/pgcoord/bin
SQLC := $(TOOLS_BIN)/sqlc-$(SQLC_VERSION)
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS_BIN)/staticcheck-$(STATICCHECK_VERSION)
# golang-migrate's own CLI (pgx5 driver), for the test of the README's
# workflow for DBAs; the same version as the library's go.mod.
MIGRATE_VERSION := v4.20.1
MIGRATE := $(TOOLS_BIN)/migrate-$(MIGRATE_VERSION)

# Nested modules with their own go.mod (heavy dependencies kept out of the
# library's): make test and make verify cover them too. Each requires the
# library's release, as a user's module does; go.work points that at this
# tree. The library's own commands run with GOWORK=off (ROOT_GO), so that
# they build with the versions its go.mod gives users, not the workspace's
# (the nested modules' heavier dependencies raise some shared ones).
METRICS_MODULES := metrics/prom metrics/otel
NESTED_MODULES := bench chaostest $(METRICS_MODULES)
ROOT_GO := GOWORK=off $(GO)

# The packages whose tests need a Patroni stack (PGCOORD_HA=1, make ha).
HA_PACKAGES := ./hatest/

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-z][a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Run the demo: three agents, shared volumes, a crash and a takeover (starts its own PostgreSQL unless DATABASE_URL is set).
	$(ROOT_GO) run ./cmd/pgcoord demo

.PHONY: test
test: $(MIGRATE) pg13 ## Run every test with the race detector (starts its own PostgreSQL unless PGCOORD_TEST_DATABASE_URL is set).
	$(ROOT_GO) test -race -count=1 -timeout 20m ./...
	for m in chaostest $(METRICS_MODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...) || exit 1; done

.PHONY: pg13
pg13: ## Install PostgreSQL 13 server binaries (npm registry, seconds; a no-op once there) for the test that pgcoord refuses it.
	scripts/install-pg-versions.sh 13

.PHONY: test-matrix
test-matrix: $(MIGRATE) pg13 ## Run the root module's tests and the short chaos run against PostgreSQL 14, 15, 16, 17 and 18 (PG_VERSIONS), one after another; a summary line per version (docs/versions.md).
	scripts/test-matrix.sh

.PHONY: chaos
chaos: ## Run the long chaos suite (CHAOS_DURATION, default 3m): faults injected while coordinators contend; prints the figures, the worst signals' timelines and any signal past the bound (CHAOS_LOG, an absolute path, keeps the full output).
	@log=$${CHAOS_LOG:-/tmp/pgcoord-chaos.log}; echo "full output: $$log"; \
	set -o pipefail; cd chaostest && PGCOORD_CHAOS_LONG=1 PGCOORD_CHAOS_DURATION=$${CHAOS_DURATION:-3m} $(GO) test -race -count=1 -timeout 30m -run '^TestChaos' -v . | tee "$$log" | grep -E '^(chaos:|--- |ok|FAIL|PASS)'

.PHONY: ha
ha: ## Run pgcoord against real HA stacks (etcd, PostgreSQL 15 under Patroni, HAProxy; scripts/install-ha.sh installs them): per case, fault-to-first-acquire times and overlaps found (HA_LOG keeps the full output).
	scripts/install-ha.sh
	@log=$${HA_LOG:-/tmp/pgcoord-ha.log}; logs=$${HA_LOGS:-/tmp/pgcoord-ha-logs}; echo "full output: $$log; the stacks' logs: $$logs"; \
	PGCOORD_HA=1 PGCOORD_HA_LOGS=$$logs $(ROOT_GO) test -race -count=1 -p 1 -timeout 40m -v ./internal/hastack/ $(HA_PACKAGES) >$$log 2>&1; rc=$$?; \
	grep -E '^(ha:|--- |ok|FAIL|PASS|panic)' $$log; \
	if [ $$rc -ne 0 ]; then echo "make ha failed (rc=$$rc); the end of $$log:"; tail -n 80 $$log; fi; exit $$rc

.PHONY: fuzz
fuzz: ## Run each fuzz target briefly (FUZZTIME: a count such as 50000x, the default, or a duration).
	$(ROOT_GO) test -run='^$$' -fuzz=FuzzParseFormat -fuzztime=$${FUZZTIME:-50000x} -fuzzminimizetime=5s ./internal/tmpl/
	$(ROOT_GO) test -run='^$$' -fuzz=FuzzKey -fuzztime=$${FUZZTIME:-50000x} -fuzzminimizetime=5s ./internal/hash/
	$(ROOT_GO) test -run='^$$' -fuzz=FuzzNewConfig -fuzztime=$${FUZZTIME:-50000x} -fuzzminimizetime=5s .

.PHONY: bench
bench: bench-go bench-peers ## Run both benchmark suites below.

.PHONY: bench-go
bench-go: ## Run the root package's benchmarks (go test -bench) ROUNDS times (default 5) against a throwaway PostgreSQL; print medians and ratios to raw pgx.
	ROUNDS=$${ROUNDS:-5} scripts/bench.sh

.PHONY: bench-ratio
bench-ratio: ## Print the four hot-path ratios to raw pgx (sync, AsyncRelease, handoff, 64 goroutines) as medians of ROUNDS (5) interleaved rounds of BENCHTIME (2s), each ratio's two benchmarks back to back, with allocations per Acquire+Release.
	scripts/bench-ratio.sh

.PHONY: sql-floor
sql-floor: ## What pgcoord's hot-path statements cost the server alone (pgbench, raw vs pgcoord's SQL, ROUNDS interleaved rounds): the ceilings of bench-ratio's sync, async and handoff ratios on this machine.
	scripts/sql-floor.sh

.PHONY: bench-peers
bench-peers: ## Compare pgcoord with raw pgx, etcd, Redis (redsync) and a tooz-style baseline (bench/, PEER_ROUNDS, default 3; installs redis-server if missing); print a markdown table of medians.
	scripts/bench-peers.sh -rounds $${PEER_ROUNDS:-3}

.PHONY: fleet
fleet: ## Fleet benchmark (bench/fleet): 50 coordinators in 5 processes, 20 goroutines each, 100 shared names, max_connections=100, against a connection per holder or waiter; then the starvation run (FLEET_DURATION, default 30s).
	scripts/fleet.sh

.PHONY: heartbeat
heartbeat: ## Heartbeat load on pgcoord.members: 500 members beating every second for 5 minutes (HEARTBEAT_DURATION); table size and HOT updates.
	cd bench && $(GO) run ./fleet heartbeat -duration $${HEARTBEAT_DURATION:-5m}

.PHONY: generate
generate: $(SQLC) ## Regenerate db/ from queries/ and migrations/ with sqlc.
	$(SQLC) generate

.PHONY: verify
verify: $(SQLC) $(STATICCHECK) ## Check formatting, go vet, staticcheck, and that db/ matches queries/ (sqlc diff).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(ROOT_GO) mod tidy -diff
	$(ROOT_GO) vet ./...
	GOWORK=off $(STATICCHECK) ./...
	GO=$(GO) scripts/tidy-check.sh $(NESTED_MODULES)
	for m in $(NESTED_MODULES); do (cd $$m && $(GO) vet ./... && $(STATICCHECK) ./...) || exit 1; done
	$(SQLC) diff || { echo "db/ is stale: run 'make generate' and commit it"; exit 1; }

.PHONY: tools
tools: $(SQLC) $(STATICCHECK) $(MIGRATE) ## Build the pinned tools into $(TOOLS_BIN).

# Each tool builds into a directory of its own and is renamed into place, so
# that two makes building it at once (two worktrees, a CI clone beside a
# checkout) do not take each other's binary: one shared build directory
# made one of them fail with "mv: cannot stat".
$(SQLC):
	@mkdir -p $(TOOLS_BIN)
	tmp=$$(mktemp -d $(TOOLS_BIN)/.sqlc-build.XXXXXX) && GOBIN=$$tmp $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION) && mv $$tmp/sqlc $@ && rmdir $$tmp

$(STATICCHECK):
	@mkdir -p $(TOOLS_BIN)
	tmp=$$(mktemp -d $(TOOLS_BIN)/.staticcheck-build.XXXXXX) && GOBIN=$$tmp $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) && mv $$tmp/staticcheck $@ && rmdir $$tmp

$(MIGRATE):
	@mkdir -p $(TOOLS_BIN)
	tmp=$$(mktemp -d $(TOOLS_BIN)/.migrate-build.XXXXXX) && GOBIN=$$tmp $(GO) install -tags pgx5 github.com/golang-migrate/migrate/v4/cmd/migrate@$(MIGRATE_VERSION) && mv $$tmp/migrate $@ && rmdir $$tmp
