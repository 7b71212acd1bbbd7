# Two commands: `make director.img webserver.img` and `make test`. `make help` lists the rest.
PROFILE ?= profiles/howto.toml
VENV    ?= .venv
PY      := $(VENV)/bin/python

SEEDS   ?= build/seeds/$(basename $(notdir $(PROFILE)))

.PHONY: help test unit lint seeds
help:  ## list the targets
	@grep -E '^[a-z.%-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(VENV)/.done: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

test: unit  ## run every test

unit: $(VENV)/.done  ## fast tests, no VM
	$(PY) -m pytest -q tests/unit

lint: $(VENV)/.done  ## validate PROFILE and flag the howto's traps
	$(PY) -m builder lint $(PROFILE)

seeds: $(VENV)/.done  ## one seed ISO per node of PROFILE, in $(SEEDS)
	$(PY) -m builder seed $(PROFILE) --out $(SEEDS)
