# iop-suite: `make run` sets up and starts the suite; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KAFKA_JARS := $(or $(IOP_VAR_DIR),var)/kafka/lib/.resolved
# Start our own broker unless KAFKA_BOOTSTRAP_SERVERS names an existing one; the topics and the services then
# find it on IOP_KAFKA_PORT (shared/config.py), so moving that port moves everything.
OWN_KAFKA := $(if $(KAFKA_BOOTSTRAP_SERVERS),,yes)

.PHONY: help setup run stop status test test-unit fuzz kafka-up kafka-down topics bench profile lint demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

$(KAFKA_JARS): deploy/kafka/pom.xml
	deploy/kafka/kafka.sh jars

setup: $(STAMP) $(KAFKA_JARS) ## Virtual environment, dependencies and Kafka jars (quick when done)

kafka-up: setup ## Start the local Kafka broker (KRaft, 127.0.0.1:9092 or IOP_KAFKA_PORT) and wait until it answers
	deploy/kafka/kafka.sh start

kafka-down: ## Stop the local Kafka broker
	deploy/kafka/kafka.sh stop

topics: setup ## Create the contract's topics (6 partitions) and their .dlq companions
	$(PY) -m shared.events.admin topics

run: setup ## Set up and start everything: broker, topics, four services and their workers
	@$(if $(OWN_KAFKA),deploy/kafka/kafka.sh start,echo "kafka: using $(KAFKA_BOOTSTRAP_SERVERS)")
	@$(PY) -m shared.events.admin topics
	@deploy/suite.sh start
	@echo "A development token (all scopes): .venv/bin/iop token --scope 'system/*.cruds'"
	@echo "Stop with: make stop"

stop: ## Stop the services, their workers and the local broker
	@deploy/suite.sh stop
	@deploy/kafka/kafka.sh stop

status: ## Processes, readiness, consumer lag, dead letters and EHR subscriptions in error
	@deploy/suite.sh status || true
	@deploy/kafka/kafka.sh status || true
	@$(VENV)/bin/iop status || true

test: setup ## Run every test (unit, integration, end-to-end) against a real broker the tests start
	$(PY) -m pytest -q

test-unit: setup ## Only the fast unit tests
	$(PY) -m pytest -q tests/unit

fuzz: setup ## A fuzzing campaign against the four services (FUZZ_REQUESTS=50000), printing what it found
	IOP_FUZZ_PROFILE=campaign IOP_FUZZ_REQUESTS=$(or $(FUZZ_REQUESTS),50000) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

bench: setup ## Run the benchmarks in bench/ on both store profiles (PROFILE=sqlite|postgresql|both, DURATION=s)
	$(PY) -m bench.run --profile $(or $(PROFILE),both)$(if $(DURATION), --seconds $(DURATION))$(if $(QUICK), --quick)

profile: setup ## Sample every service process with py-spy under a steady intake load (RATE=30 DURATION=20)
	@$(VENV)/bin/py-spy --version >/dev/null 2>&1 || $(PY) -m pip install -q --disable-pip-version-check -e '.[profile]'
	$(PY) -m bench.profile --rate $(or $(RATE),30) --seconds $(or $(DURATION),20)

lint: setup ## ruff
	$(VENV)/bin/ruff check shared services tests bench

demo: setup ## One synthetic patient through the five steps of care (needs `make run`)
	$(PY) -m bench.demo

clean: stop ## Stop everything and remove var/ (data, logs, broker data)
	rm -rf var
