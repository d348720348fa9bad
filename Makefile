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
# The tests whose services or temporary stores run on the engine IOP_TEST_STORE names: `make test` runs them a
# second time on PostgreSQL (the store contract suite and the outage tests cover both engines in the first pass).
PG_TESTS := $(addprefix tests/e2e/test_,$(addsuffix .py,http_edges intake journey operator \
  referrals_not_admitted security subscription_lifecycle suite_starts store_restart ehr_delivery)) \
  tests/integration/test_bad_input.py tests/integration/test_conditional.py \
  tests/integration/test_fhir_conformance.py tests/integration/test_http_contract.py \
  tests/integration/test_operation_input.py tests/integration/test_patch.py tests/integration/test_patient_data.py \
  tests/integration/test_search_breadth.py tests/integration/test_group_sessions.py \
  tests/integration/test_consumer_failures.py \
  tests/integration/test_batch_entries.py tests/integration/test_rolling_schedule.py \
  tests/integration/test_ehr_dispatch.py tests/integration/test_subscription_writes.py \
  tests/integration/test_event_backbone.py tests/integration/test_failure_watch.py tests/fuzz

.PHONY: help setup tools run run-cluster stop status test test-unit test-postgresql fuzz kafka-up kafka-down pg-up pg-down topics bench profile stages produce lint demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# The dependencies are installed by uv (pinned here; the project's own pins are in pyproject.toml): a clean
# clone's install takes about a third of pip's time.
UV_VERSION := 0.13.8
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[test]'
	@touch $@

$(KAFKA_JARS): deploy/kafka/pom.xml
	deploy/kafka/kafka.sh jars

setup: $(STAMP) $(KAFKA_JARS) ## Virtual environment, dependencies, Kafka jars, PostgreSQL binaries (quick when done)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || deploy/postgres/postgres.sh install

# The deployment checks' tool that PyPI does not serve, fetched once and kept under var/tools: promtool from Debian's
# prometheus package (unpacked, nothing installed or started). hadolint, kubernetes-validate and the Helm SDK
# come with the test dependencies.
TOOLS := var/tools
PROMTOOL := $(TOOLS)/prometheus/usr/bin/promtool

$(PROMTOOL):
	@mkdir -p $(TOOLS)/deb
	cd $(TOOLS)/deb && (apt-get download prometheus 2>/dev/null || (apt-get update -qq && apt-get download prometheus))
	dpkg -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/prometheus
	@rm -rf $(TOOLS)/deb

tools: $(PROMTOOL) ## promtool for the deployment checks, cached under var/tools

kafka-up: setup ## Start the local Kafka broker (KRaft, 127.0.0.1:9092 or IOP_KAFKA_PORT) and wait until it answers
	deploy/kafka/kafka.sh start

kafka-down: ## Stop the local Kafka broker
	deploy/kafka/kafka.sh stop

pg-up: setup ## Start a local PostgreSQL (var/postgres, 127.0.0.1:5432 or IOP_PG_PORT) with a database per service
	deploy/postgres/postgres.sh start
	@echo "Point the services at it with: eval \"\$$(deploy/postgres/postgres.sh env)\""

pg-down: ## Stop the local PostgreSQL
	deploy/postgres/postgres.sh stop

topics: setup ## Create the contract's topics (6 partitions) and their .dlq companions
	$(PY) -m shared.events.admin topics

run: setup ## Set up and start everything: broker, topics, four services and their workers (under supervisord)
	@$(if $(OWN_KAFKA),deploy/kafka/kafka.sh start,echo "kafka: using $(KAFKA_BOOTSTRAP_SERVERS)")
	@$(PY) -m shared.events.admin topics
	@deploy/suite.sh start embedded
	@echo "A development token (all scopes): .venv/bin/iop token --scope 'system/*.cruds'"
	@echo "Stop with: make stop"

HAPROXY_BIN := /usr/sbin/haproxy
$(HAPROXY_BIN):
	apt-get install -y haproxy || { apt-get update && apt-get install -y haproxy; }

run-cluster: setup $(HAPROXY_BIN) ## The cluster profile: PostgreSQL, 3 Kafka nodes, 2 web + 2 worker replicas per service behind HAProxy
	@deploy/suite.sh run-cluster
	@echo "A development token (all scopes): .venv/bin/iop token --scope 'system/*.cruds'"
	@echo "Stop with: make stop"

stop: ## Stop the services, their workers and the local broker, cluster and PostgreSQL
	@deploy/suite.sh stop
	@deploy/kafka/kafka.sh stop
	@if [ -x deploy/kafka/cluster.sh ]; then deploy/kafka/cluster.sh stop; fi
	@if [ -x deploy/postgres/postgres.sh ]; then deploy/postgres/postgres.sh stop; fi

status: ## Every replica (supervisorctl status, readiness), consumer membership and lag, dead letters, EHRs in error
	@deploy/suite.sh status || true
	@deploy/kafka/kafka.sh status || true
	@if [ -x deploy/kafka/cluster.sh ]; then deploy/kafka/cluster.sh status || true; fi
	@$(VENV)/bin/iop status || true

# `make test` runs three streams at once, each on ports and a var dir of its own, and prints the other two's output
# when all are done; any failing fails it:
# - the SQLite pass, without the outage tests;
# - the outage tests, which mostly wait for brokers, workers, a cluster or PostgreSQL to die and come back: those
#   on SQLite stores, then those of the PostgreSQL pass; ports + 6000, var/test-outages, output in
#   var/test-outages.log. It first builds the test EHR's jar, which the other two wait for when they need it;
# - the rest of the PostgreSQL pass: ports + 3000, var/test-postgresql, output in var/test-postgresql.log.
OUTAGE_TESTS := tests/e2e/test_cluster_topology.py tests/e2e/test_deploy.py tests/failover \
  tests/integration/test_broker_outages.py
PG_OUTAGE_TESTS := tests/e2e/test_store_restart.py tests/integration/test_event_backbone.py
offset = IOP_TEST_PORT_OFFSET=$$(( $${IOP_TEST_PORT_OFFSET:-0} + $(1) )) IOP_TEST_VAR_DIR=$(CURDIR)/var/$(2)
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
PG_PASS := IOP_TEST_STORE=postgresql $(call offset,3000,test-postgresql) $(PYTEST) \
  $(filter-out $(PG_OUTAGE_TESTS),$(PG_TESTS))
HAPI_BUILD := $(PY) -c 'from tests.support import jvm, hapi_server; jvm.quick_by_default(); hapi_server.HapiServer.ensure_built()'
OUTAGE_PASS := $(HAPI_BUILD); $(call offset,6000,test-outages) $(PYTEST) $(OUTAGE_TESTS); sqlite=$$?; \
  IOP_TEST_STORE=postgresql $(call offset,6000,test-outages) $(PYTEST) $(PG_OUTAGE_TESTS); exit $$(( sqlite || $$? ))

test: setup $(HAPROXY_BIN) $(PROMTOOL) ## Run every test (unit, integration, end-to-end) against a real broker the tests start, and the store-touching ones on PostgreSQL beside them
	@echo "the outage tests and the PostgreSQL pass run beside this one: var/test-outages.log, var/test-postgresql.log"
	@( $(OUTAGE_PASS) ) >var/test-outages.log 2>&1 & outages=$$!; $(PG_PASS) >var/test-postgresql.log 2>&1 & pg=$$!; \
	  trap 'kill $$outages $$pg 2>/dev/null' INT TERM; \
	  $(PY) -m pytest -q $(addprefix --ignore=,$(OUTAGE_TESTS)); sqlite=$$?; \
	  wait $$outages; outage=$$?; wait $$pg; postgresql=$$?; \
	  echo "--- the outage tests (var/test-outages.log)"; cat var/test-outages.log; \
	  echo "--- the PostgreSQL pass (var/test-postgresql.log)"; cat var/test-postgresql.log; \
	  echo "SQLite pass: exit $$sqlite; outage tests: exit $$outage; PostgreSQL pass: exit $$postgresql"; \
	  exit $$(( sqlite || outage || postgresql ))

test-postgresql: setup ## Only the store-touching tests, with every store on a throwaway PostgreSQL server
	IOP_TEST_STORE=postgresql $(PY) -m pytest -q $(PG_TESTS)

test-unit: setup ## Only the fast unit tests
	$(PY) -m pytest -q tests/unit

fuzz: setup ## A fuzzing campaign against the four services (FUZZ_REQUESTS=50000), printing what it found
	IOP_FUZZ_PROFILE=campaign IOP_FUZZ_REQUESTS=$(or $(FUZZ_REQUESTS),50000) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

bench: setup ## Run the benchmarks in bench/ on both store profiles (PROFILE=sqlite|postgresql|both, DURATION=s, ONLY=search,p1,...)
	$(PY) -m bench.run --profile $(or $(PROFILE),both)$(if $(DURATION), --seconds $(DURATION))$(if $(QUICK), --quick)$(if $(ONLY), --only $(ONLY))

profile: setup ## Sample every service process with py-spy under a steady intake load (RATE=30 DURATION=20; SETTLE=120: idle CPU at rest)
	@$(VENV)/bin/py-spy --version >/dev/null 2>&1 || $(PY) -m pip install -q --disable-pip-version-check -e '.[profile]'
	$(PY) -m bench.profile --rate $(or $(RATE),30) --seconds $(or $(DURATION),20)$(if $(SETTLE), --settle $(SETTLE))

stages: setup ## CPU per intake of each service's own work in one process, without Kafka (INTAKES=200)
	$(PY) -m bench.stages --intakes $(or $(INTAKES),200)

produce: setup ## CPU of a relay's round of nine events with kafka-python's 16 kB batch and with the suite's (ROUNDS=200)
	$(PY) -m bench.produce --rounds $(or $(ROUNDS),200)

lint: setup ## ruff
	$(VENV)/bin/ruff check shared services tests bench

demo: setup ## One synthetic patient through the five steps of care (needs `make run`)
	$(PY) -m bench.demo

clean: stop ## Stop everything and remove var/ (data, logs, broker data)
	rm -rf var
