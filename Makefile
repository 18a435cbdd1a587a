# paystream: the user's verbs. `make help` lists them.
#
# Build output and caches live outside the clone so CI's fresh clones build warm:
#   cargo target -> $(PAYSTREAM_CACHE)/target, Go -> its own caches, Maven -> ~/.m2.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export PAYSTREAM_CACHE ?= $(HOME)/.cache/paystream
export CARGO_TARGET_DIR ?= $(PAYSTREAM_CACHE)/target
export PAYSTREAM_VAR ?= $(CURDIR)/var
export KUBECONFIG_LOCAL := $(PAYSTREAM_VAR)/cluster/kubeconfig
# Toolchains the machine image keeps outside the default PATH.
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

## ---- The two commands -------------------------------------------------------

.PHONY: up
up: toolchain build stack-up seed ## Build, start the stack and workloads, seed demo data, show it working
	@bash scripts/up.sh

.PHONY: test
test: toolchain stack-up ## Unit and integration tests of every crate against the real stack
	$(CARGO) test --workspace --exclude paystream-e2e --locked
	python3 -m unittest discover -s bench/report -t bench/report
	python3 -m unittest discover -s bench/kind -t bench/kind

## ---- Everyday ---------------------------------------------------------------

.PHONY: toolchain
toolchain: ## Install the system packages the Rust build needs (idempotent)
	@bash scripts/toolchain.sh

.PHONY: build
build: toolchain ## Build every crate
	$(CARGO) build --workspace --locked

.PHONY: lint
lint: toolchain ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: down
down: ## Stop the workloads, the stack, the local cluster and the kind cluster with its engine
	@bash scripts/down.sh
	@bash stack/down.sh
	@bash e2e/controlplane/down.sh
	@bash e2e/kind/down.sh

.PHONY: clean
clean: down ## Stop everything and wipe all local data
	rm -rf $(PAYSTREAM_VAR)

.PHONY: crds
crds: ## Regenerate the CRD YAML from the operator's types (a test keeps it current)
	$(CARGO) run -q -p paystream-operator --bin crdgen > crds/paymentpipeline.yaml

.PHONY: seed
seed: stack-up ## Seed demo data (10,000 users; SEED_USERS to change)
	@bash stack/seed.sh

## ---- Benchmarks (measure; never pass/fail) --------------------------------------

.PHONY: bench bench-cdc bench-api bench-freshness bench-rebuild bench-report bench-build
# One package set for every part: cargo unifies features over the packages
# of one build, so parts built with different sets rebuild each other's
# shared crates (minutes each in a full run).
export BENCH_PACKAGES := -p paystream-producer -p paystream-consumer -p paystream-api -p paystream-operator -p paystream-bench
bench-build: toolchain ## Release build of everything the benchmarks run
	$(CARGO) build --release --locked $(BENCH_PACKAGES)
# Every part runs even when another fails; the report names what is missing.
bench: bench-build stack-up ## Every benchmark, every point repeated (about 26 to 28 min on 2 cores with the kind part, plus the first builds), then bench/results/<date>.md with plots
	@since=$$(date +%s); failed=""; \
	for part in bench-api bench-cdc bench-freshness bench-rebuild bench-operator bench-kind; do \
	  $(MAKE) --no-print-directory $$part BENCH_ARGS= || failed="$$failed $$part"; \
	done; \
	python3 bench/report/report.py --since "$$since"; \
	if [ -n "$$failed" ]; then echo "bench: failed:$$failed (the report says what is missing)" >&2; exit 1; fi
bench-report: ## The combined report again, from the newest result of each part (any age)
	python3 bench/report/report.py
bench-cdc: bench-build stack-up ## CDC: paystream vs Debezium vs mariadb-binlog: drain rows/s, latency p50/p99, peak RSS
	$(CARGO_TARGET_DIR)/release/paystream-bench cdc $(BENCH_ARGS)

bench-api: bench-build stack-up ## API: cached reads vs HTTP ceiling, MySQL, redis-benchmark at 100/1k/10k connections
	@bash bench/api/run.sh

bench-freshness: bench-build stack-up ## Freshness: commit to visible through the API, p50/p99 at 1,000 and 5,000 rows/s
	$(CARGO_TARGET_DIR)/release/paystream-bench freshness $(BENCH_ARGS)

bench-rebuild: bench-build stack-up ## Read-model rebuild after Redis lost its data: records/s against a bare read of the same topics (target 50,000/s)
	$(CARGO_TARGET_DIR)/release/paystream-bench rebuild $(BENCH_ARGS)

.PHONY: bench-operator bench-cluster
# The local control plane with the benchmark's controller-manager rate: a
# cluster already running with another rate (e.g. left by make e2e) is
# restarted, so 1,000 pipelines are not paced by a 20 QPS client.
bench-cluster: export CONTROLLER_MANAGER_KUBE_API_QPS ?= 200
bench-cluster: export CONTROLLER_MANAGER_KUBE_API_BURST ?= 400
bench-cluster: export CONTROLPLANE_PROFILING ?= false
bench-cluster:
	@if pgrep -f kube-controller-manager >/dev/null && \
	  ! pgrep -af kube-controller-manager | grep -- "--kube-api-qps $$CONTROLLER_MANAGER_KUBE_API_QPS" | grep -q -- "--profiling=$$CONTROLPLANE_PROFILING"; then \
	  echo "[bench] restarting the control plane with the controller manager at $$CONTROLLER_MANAGER_KUBE_API_QPS QPS, profiling $$CONTROLPLANE_PROFILING"; \
	  bash e2e/controlplane/down.sh; \
	fi
	@bash e2e/controlplane/up.sh
# A setting of the test cluster for this benchmark (docs/benchmarks.md): the
# controller manager gets 200 QPS / burst 400 instead of upstream's 20 / 30
# (bench-cluster restarts a cluster running with another rate); the report
# says which one was in force.
bench-operator: export CONTROLLER_MANAGER_KUBE_API_QPS ?= 200
bench-operator: export CONTROLLER_MANAGER_KUBE_API_BURST ?= 400
bench-operator: bench-build bench-cluster stack-up ## Operator: 100 and 1,000 PaymentPipelines, twice each (BENCH_OPERATOR_REPEAT): time to Ready, RSS, CPU, idle API requests
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO_TARGET_DIR)/release/paystream-bench operator $(BENCH_ARGS)

.PHONY: bench-kind
# Real pods on the kind cluster (make kind-up, reused when it is up); the
# operator is re-installed watching every namespace and put back afterwards.
bench-kind: kind-up ## kind: 1 and 10 PaymentPipelines on real pods, twice each (BENCH_KIND_REPEAT): time to Ready against as many pause pods, node and operator memory, image sizes
	@bash bench/kind/run.sh

## ---- Chaos (judges: exits non-zero on lost, stale or duplicate rows) -----------

.PHONY: chaos chaos-short
CHAOS_SECONDS ?= 600
CHAOS_SEED ?= 19
CHAOS_RATE ?= 1000
CHAOS_SHORT_SECONDS ?= 150
CHAOS_SHORT_SEED ?= 7
CHAOS_SHORT_RATE ?= 500
chaos: bench-build stack-up ## Chaos run (CHAOS_SECONDS=600, CHAOS_SEED, CHAOS_RATE=1000): kills, restarts, stalls, Redis data loss under load; recovery times; MySQL vs Redis, API, Kafka (docs/chaos.md)
	$(CARGO_TARGET_DIR)/release/paystream-bench chaos --seconds $(CHAOS_SECONDS) --seed $(CHAOS_SEED) --rate $(CHAOS_RATE) --bin-dir $(CARGO_TARGET_DIR)/release $(CHAOS_ARGS)
chaos-short: toolchain stack-up ## Short chaos run for CI: debug binaries, fixed seed, CHAOS_SHORT_SECONDS=150 of writing
	$(CARGO) build --workspace --exclude paystream-e2e --bins --locked
	$(CARGO_TARGET_DIR)/debug/paystream-bench chaos --seconds $(CHAOS_SHORT_SECONDS) --seed $(CHAOS_SHORT_SEED) --rate $(CHAOS_SHORT_RATE) --bin-dir $(CARGO_TARGET_DIR)/debug $(CHAOS_ARGS)

## ---- Local stack: MariaDB, Kafka, Redis ---------------------------------------

.PHONY: stack-up stack-down stack-status
stack-up: ## Install (if missing) and start MariaDB, Kafka and Redis on loopback
	@bash stack/up.sh
stack-down: ## Stop the stack; no process is left
	@bash stack/down.sh
stack-status: ## One line per server
	@bash stack/status.sh

.PHONY: redis-cluster-up redis-cluster-down
redis-cluster-up: ## Start the local 3-node Redis Cluster (the Cluster tests start it themselves)
	@bash stack/redis/cluster-up.sh
redis-cluster-down: ## Stop it; no process is left
	@bash stack/redis/cluster-down.sh

## ---- Kubernetes: local control plane (no Docker) and kind --------------------

.PHONY: cluster-build cluster-up cluster-down cluster-status e2e e2e-cluster e2e-operator kind-up kind-down kind-status
cluster-build: ## Build kube-apiserver, controller-manager, scheduler, KWOK, metrics-server (cached)
	@bash e2e/controlplane/build.sh
cluster-up: ## Start the local control plane with KWOK nodes and metrics-server
	@bash e2e/controlplane/up.sh
cluster-down: ## Stop the local control plane; no process is left
	@bash e2e/controlplane/down.sh
cluster-status: ## Show the local control plane
	@bash e2e/controlplane/status.sh
e2e-cluster: cluster-up ## Control-plane e2e tests against the local cluster
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO) test -p paystream-e2e --locked --test cluster -- --test-threads=1
e2e-operator: cluster-up stack-up ## Operator e2e (operator and producer as local processes, real stack)
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO) test -p paystream-e2e --locked --test operator --test operator_resilience -- --test-threads=1
e2e: e2e-cluster e2e-operator chart-test ## Every e2e test against the local control plane
.PHONY: helm chart-test kind-e2e
helm: ## Install the pinned Helm (v3.22.0, Go module proxy) into $(PAYSTREAM_CACHE)/bin
	@bash charts/install-helm.sh >/dev/null
chart-test: helm cluster-up ## Helm chart: lint, template + server dry run, install on the local control plane
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO) test -p paystream-e2e --locked --test chart -- --test-threads=1
kind-e2e: toolchain stack-up helm cluster-build ## Real pods on kind, built offline here: images, node image, chart, pipeline, shared + real-pod e2e suites
	@bash e2e/kind/e2e.sh
kind-up: toolchain stack-up cluster-build ## A kind cluster with real pods (private dockerd, offline node image); reused when it exists
	@bash e2e/kind/up.sh
kind-down: ## Delete the kind cluster, stop the private dockerd; no container, bridge, rule, mount or process is left
	@bash e2e/kind/down.sh
kind-status: ## The engine, the node image and the kind cluster
	@bash e2e/kind/engine/status.sh || true
	@bash e2e/kind/status.sh
