# roomlog — two commands do everything on a fresh machine:
#   make up     run the platform (infra + migrations + topics + api + streams + media node)
#   make test   install what is missing, then run unit, integration and e2e tests
#               inside a loopback-only network namespace, and tear down.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: help install venv infra-install browser-install infra-up infra-down infra-status migrate topics \
        up down test test-unit test-inside lint golden bench bench-sfu bench-join bench-obs lock native native-test bench-native \
        k8s-install k8s-check k8s-topics

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv:  ## create .venv from requirements.lock (idempotent)
	@scripts/bootstrap.sh

infra-install:  ## fetch Kafka jars, build MinIO, install Postgres (cached, idempotent)
	@scripts/infra.sh install

browser-install:  ## Chromium (apt) for the browser e2e tests (idempotent)
	@scripts/browser.sh install

native: venv  ## build the native forwarding core (native/: C + libsrtp2 via cffi; cached, idempotent)
	@scripts/native.sh build

native-test: native  ## the native core's C unit tests (ASan/UBSan)
	@scripts/native.sh test

install: venv native infra-install browser-install k8s-install  ## everything the platform and tests need

infra-up: infra-install  ## start Kafka (KRaft), Postgres, MinIO on loopback
	@scripts/infra.sh up

infra-down:  ## stop the infrastructure started from this checkout
	@scripts/infra.sh down

infra-status:
	@scripts/infra.sh status

migrate: venv  ## alembic upgrade head
	@set -a; [ -f "$${ROOMLOG_RUN_DIR:-.run}/infra.env" ] && . "$${ROOMLOG_RUN_DIR:-.run}/infra.env"; set +a; \
	  $(PY) -m db.migrate upgrade head

topics: venv  ## create every registry topic
	@set -a; [ -f "$${ROOMLOG_RUN_DIR:-.run}/infra.env" ] && . "$${ROOMLOG_RUN_DIR:-.run}/infra.env"; set +a; \
	  $(PY) -m producers.admin create-topics

up: install  ## run the whole platform in the foreground; Ctrl-C (or make down) stops it
	@scripts/up.sh run

down:  ## stop what `make up` started, including the infrastructure
	@scripts/up.sh down

test: install lint native-test  ## lint, native C tests, then unit + integration + e2e inside a loopback-only network namespace
	@scripts/netns.sh scripts/test.sh

test-unit: venv  ## unit tests only (no network)
	@$(PY) -m pytest tests/unit -q

lint: venv  ## ruff check + ruff format --check + mypy --strict on every package
	@$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

golden: venv  ## add golden fixtures for new event types (append-only)
	@$(PY) -m producers.golden write && $(PY) -m producers.golden check

asyncapi: venv  ## regenerate docs/asyncapi.json (the event contract) from the catalog
	@$(PY) -m producers.asyncapi

bench: install  ## log throughput benchmark (prints JSON)
	@scripts/netns.sh bash -c '$(PY) -m bench.log_throughput --json'

bench-decide: venv  ## the room agent's CPU ceiling without Kafka: decide + encode per core (prints JSON)
	@$(PY) -m bench.decide_cpu

bench-sfu: install  ## SFU forwarding benchmark: subscribers per core vs MediaRelay (prints JSON)
	@scripts/netns.sh bash -c '$(PY) -m bench.sfu_forwarding --json'

bench-obs: install  ## the cost of tracing + metrics: log throughput and SFU forwarding, off vs on (prints JSON)
	@scripts/netns.sh bash -c '$(PY) -m bench.observability_cost --json'

bench-join: install  ## join latency benchmark: join -> first frame, per hop (prints JSON)
	@scripts/netns.sh bash -c '$(PY) -m bench.join_latency --json'

bench-native: native  ## native core vs Python: unprotect→rewrite→protect→send packets/s per core (prints JSON)
	@$(PY) -m bench.native_core --json

k8s-install: venv  ## kustomize + kubeconform (go install) and Kubernetes JSON schemas, cached (idempotent)
	@scripts/k8s.sh install

k8s-check: k8s-install  ## render deploy/k8s (dev, prod, edge) with kustomize; validate every object (K8s + CRD schemas)
	@$(PY) -m deploy.k8s.check $(if $(K8S_DIR),--root $(K8S_DIR)) $(K8S_CHECK_ARGS)

k8s-topics: venv  ## regenerate deploy/k8s/base/kafka/topics.yaml (KafkaTopics) from producers/topics.py
	@$(PY) -m deploy.k8s.topics

lock:  ## re-resolve requirements.lock from pyproject.toml
	@UV_CACHE_DIR=$${ROOMLOG_CACHE:-$$HOME/.cache/roomlog}/uv $${ROOMLOG_CACHE:-$$HOME/.cache/roomlog}/bootstrap/bin/uv \
	  pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11
