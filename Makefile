# LearnFlow's front door. README.md gives `make run` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: run test infra-up infra-down gen gen-check lint breaking bench token deps clean

# Installs the pinned dependencies into .venv once per pyproject.toml version.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[local,dev,bench]'
	@rm -f $(VENV)/.installed-*; touch $@

# The concepts agent validates Mermaid diagrams with Mermaid's own parser under Node.
# Without npm the run command still works; diagrams are then left out of answers.
MERMAID    := services/concepts/mermaid
NODE_STAMP := $(MERMAID)/node_modules/.installed
$(NODE_STAMP): $(MERMAID)/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix $(MERMAID) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: concept diagrams will be left out (Mermaid needs Node)"; fi

deps: $(STAMP) $(NODE_STAMP)

# Debian packages the two README commands need beyond Python (the sandbox's isolation);
# the test command's infrastructure packages are installed by infra/up.sh.
SYSTEM_PACKAGES := bubblewrap

## The mesh and the Envoy gateway on embedded defaults (or on DATABASE_URL, REDIS_URL,
## KAFKA_BOOTSTRAP_SERVERS, OPENAI_API_KEY when set).
run: $(STAMP) $(NODE_STAMP)
	@bash tools/system_packages.sh $(SYSTEM_PACKAGES)
	$(VENV)/bin/learnflow run

## Real Postgres, Redis, Kafka (and Envoy) brought up or reused, then the whole suite.
test: $(STAMP) $(NODE_STAMP)
	@bash tools/system_packages.sh $(SYSTEM_PACKAGES)
	bash tools/test.sh $(PYTEST_ARGS)

## Bring up (or reuse) the real infrastructure alone and print the variables for it.
infra-up: $(STAMP)
	@bash infra/up.sh

infra-down:
	@bash infra/down.sh

gen: $(STAMP)
	$(PY) tools/gen.py

gen-check: $(STAMP)
	$(PY) tools/gen.py --check

lint: $(STAMP)
	$(VENV)/bin/buf lint gen/learnflow.pb#format=binpb --config buf.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

breaking: $(STAMP)
	bash tools/buf_breaking.sh $(ref)

## Every benchmark in bench/ on the real infrastructure (brought up or reused), each
## printing its figures (bench_mastery takes ~10 minutes;
## BENCH_ARGS=--quick for a smaller run of the scripts that accept it).
bench: $(STAMP)
	@bash infra/up.sh >/dev/null; bash infra/tools.sh >/dev/null; bash bench/tools.sh >/dev/null
	@set -e; for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script $(BENCH_ARGS); done

## make token role=<student|teacher|admin|operator> sub=<user id> [tenant=dev] [cohorts=a,b]
token: $(STAMP)
	@$(VENV)/bin/learnflow token --role "$(role)" --sub "$(sub)" --tenant "$(tenant)" --cohorts "$(cohorts)"

clean:
	rm -rf .run build *.egg-info
