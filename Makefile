# Everyday tasks. `make setup` once on a fresh Debian machine, then `make test`.
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:$(PATH)
VENV ?= .venv
export VENV
BIN := $(or $(CARGO_TARGET_DIR),target)/debug/counterstack

.PHONY: setup test unit validate release-check release-notes registry-e2e lint fmt crd render plugin bench bench-web bench-failover bench-backup bench-failover-k8s bench-scale scale-guard e2e e2e-node e2e-build clean-tools

setup: ## install redis, wrk, helm, the Python validators (needs root or sudo)
	scripts/setup.sh

# The test command of the README and of .ci/run. Schema validation first; the Rust test
# run last so its summary closes the output.
test: validate e2e-build unit

unit: ## all Rust tests (unit, snapshot, mock API, real-Redis integration)
	cargo nextest run --all-targets --locked --no-fail-fast

validate: ## rendered objects, example CRs, chart and kustomize base against Kubernetes schemas
	cargo build --locked
	scripts/validate-render.sh $(BIN)
	$(VENV)/bin/python scripts/validate-examples.py
	scripts/validate-packaging.sh
	scripts/validate-release.sh

release-check: ## workflows (actionlint, schemas), krew manifest, Artifact Hub files, release notes script
	scripts/validate-release.sh

release-notes: ## the release notes of VERSION (default: Unreleased) from CHANGELOG.md
	@scripts/release-notes.sh $(or $(VERSION),Unreleased)

e2e-build: ## the real-cluster suite must at least compile
	cargo test --test e2e --no-run --locked

e2e: ## run the e2e suite against the cluster KUBECONFIG points at (k3s, kind); installs the chart
	cargo test --locked --test e2e -- --ignored --test-threads 1 --nocapture

e2e-node: ## the e2e suite on ../shared/k8s's real node (root): brings it up, images from the debug binary
	cargo build --locked
	scripts/e2e-node.sh $(BIN)

lint:
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings

fmt:
	cargo fmt

crd: ## regenerate the CRD (root copy and the chart's copy)
	cargo run --quiet -- crd > crds/counterapp.yaml
	cp crds/counterapp.yaml charts/counterstack/crds/counterapp.yaml
	cp crds/counterapp.yaml manifests/base/crds/counterapp.yaml

# The binary is also the kubectl plugin: kubectl finds `kubectl-counterstack` on PATH.
PLUGIN_DIR ?= $(HOME)/.local/bin
plugin: ## build and symlink kubectl-counterstack into PLUGIN_DIR (default ~/.local/bin)
	cargo build --release --locked
	mkdir -p $(PLUGIN_DIR)
	ln -sf $(abspath $(or $(CARGO_TARGET_DIR),target)/release/counterstack) $(PLUGIN_DIR)/kubectl-counterstack
	@echo "installed $(PLUGIN_DIR)/kubectl-counterstack; try: kubectl counterstack --help"

render: ## preview what the operator creates for the minimal example
	cargo run --quiet --release -- render -f manifests/examples/counterapp.yaml

# Needs no cluster; bench-failover-k8s (failover under load on the cluster KUBECONFIG
# points at, RUNS and SCENARIOS as in bench/failover-k8s.sh) is separate.
bench: bench-web bench-failover bench-backup

bench-web:
	bench/web.sh

bench-failover:
	bench/failover.sh

bench-backup: ## backup and restore of 1 M keys (real Redis, moto S3): time, size, write pause
	bench/backup.sh

# The node must be up (make e2e-node runs this after the suite; or local-k8s node up
# --counterstack BIN). Root.
registry-e2e: ## private registry (TLS, htpasswd) -> helm push + skopeo copy -> install from oci:// on ../shared/k8s's node; a wrong password in the status
	scripts/registry-e2e.sh

bench-failover-k8s: ## failover figures on the cluster KUBECONFIG points at (k3s, kind, ../shared/k8s)
	bench/failover-k8s.sh

bench-scale: ## N CounterApps (default 1000) on the cluster KUBECONFIG points at, with no pod running
	bench/scale.sh

# CI: 100 CounterApps with the debug binary; fails when the operator's requests at rest
# exceed 0.2/s (a count through counterstack_api_requests_total; see the script).
scale-guard: ## 100 CounterApps on the cluster KUBECONFIG points at (no node); fails when not quiet at rest
	cargo build --locked
	BIN=$(BIN) scripts/scale-guard.sh
