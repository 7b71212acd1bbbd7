# Two commands: `make director.img webserver.img` and `make test`. `make help` lists the rest.
PROFILE ?= profiles/howto.toml
VENV    ?= .venv
PY      := $(VENV)/bin/python

SEEDS   ?= build/seeds/$(basename $(notdir $(PROFILE)))

PYTEST  := $(PY) -m pytest -p no:cacheprovider
IMAGES  := director.img webserver.img

.PHONY: help test unit boot acceptance acceptance-tuned lint seeds host-setup test-tools bench-images bench
help:  ## list the targets
	@grep -E '^[a-z.%-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

RELEASE ?= bookworm
IMAGE_INPUTS := $(shell find images firstboot builder/templates -type f -not -name '*.pyc') \
	builder/profile.py builder/render.py builder/secret.py builder/run.py builder/image.py

$(VENV)/.done: pyproject.toml
	python3 -c 'import ensurepip' 2>/dev/null || apt-get install -y -q python3-venv
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

TUNED   ?= profiles/fast-failover.toml

test: unit boot acceptance acceptance-tuned  ## every test: unit, image boots, the four-VM cluster suite on the howto and the tuned profile

unit: $(VENV)/.done  ## fast tests, no VM
	$(PY) -m pytest -q tests/unit

lint: $(VENV)/.done  ## validate PROFILE and flag the howto's traps
	$(PY) -m builder lint $(PROFILE)

seeds: $(VENV)/.done  ## one seed ISO per node of PROFILE, in $(SEEDS)
	$(PY) -m builder seed $(PROFILE) --out $(SEEDS)

host-setup: $(VENV)/.done  ## install the host tools (mkosi from backports, QEMU, OVMF...)
	$(PY) -m builder host-setup

director.img webserver.img: %.img: $(IMAGE_INPUTS) | $(VENV)/.done  ## build an appliance image
	$(PY) -m builder image $* --release $(RELEASE)

%.qcow2: %.img  ## compressed qcow2 copy of an image
	$(PY) -c 'from builder import image; from pathlib import Path; image.to_qcow2(Path("$<"))'

test-tools: $(VENV)/.done
	$(PY) -m builder host-setup --tests

boot: $(IMAGES) test-tools  ## boot each image with and without its seed (QEMU; TCG unless KVM works)
	$(PYTEST) -q -s tests/boot --junitxml=test-results/boot.xml

acceptance: $(IMAGES) test-tools  ## the howto's checks and failovers on a four-VM cluster (PROFILE=...)
	PROFILE=$(PROFILE) $(PYTEST) -q -s tests/acceptance \
		--junitxml=test-results/acceptance-$(basename $(notdir $(PROFILE))).xml

acceptance-tuned: $(IMAGES) test-tools  ## the same suite on the tuned profile (TUNED=...)
	$(MAKE) --no-print-directory acceptance PROFILE=$(TUNED)

bench-images: $(IMAGES) test-tools  ## print build times, sizes, boot-to-ready, reproducibility
	$(PY) tests/bench/bench_images.py

bench: $(IMAGES) test-tools  ## failover benchmark on both profiles; report in bench-results/
	$(PY) tests/bench/bench_failover.py
