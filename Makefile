# cellblock: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo
SYNTH_ARGS ?=
export DEMO_DIR SYNTH_ARGS

.PHONY: env system browser demo test lint bench-io bench-fetch bench-train bench-predict bench-write bench-feed bench-science lock clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $@

system:  ## Debian packages of the real services (chromium, SLURM); idempotent
	scripts/apt_install.sh all

browser:  ## Debian chromium + chromium-driver only (the demo's screenshot); idempotent
	scripts/apt_install.sh browser

# The demo's step 8 renders a plate in headless chromium: `browser` makes a fresh
# machine ready for it (a no-op once installed), whether or not `make test` ran first.
demo: env browser  ## the whole pipeline end to end on an embedded synthetic RxRx1-style screen
	PATH=$(abspath $(VENV))/bin:$$PATH scripts/demo.sh

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint system  ## ruff + mypy + the whole pytest suite (slow tests included)
	$(PY) -m pytest -q

bench-io: env  ## IO benchmark: zarr vs PNG vs raw codec, writes scripts/bench/results/io.md
	$(PY) scripts/bench/io.py

bench-fetch: env  ## parallel fetch vs sequential get_object, writes scripts/bench/results/fetch.md
	$(PY) scripts/bench/fetch.py

bench-train: env  ## real zarr loader vs in-memory batches (after `make demo`), writes scripts/bench/results/train.md
	$(PY) scripts/bench/train.py

bench-predict: env  ## daisy blockwise vs in-process prediction (after `make demo`), writes scripts/bench/results/predict.md
	$(PY) scripts/bench/predict.py

bench-write: env  ## storing predicted wells: zarr-python vs the chunk writer, writes scripts/bench/results/write.md
	$(PY) scripts/bench/write.py

bench-feed: env  ## a worker's loop against a 2,000 img/s stand-in device; statistics once per plate, writes scripts/bench/results/feed.md
	$(PY) scripts/bench/feed.py

bench-science: env  ## how far the recipe reaches (hours on 2 cores): the difficulty sweep, then the recipes at effect 1.0 / batch 2
	$(PY) scripts/bench/science.py --work .science --recipes default
	$(PY) scripts/bench/science.py --work .science --effects 1.0 --batches 2 --name science_recipes \
	    --recipes default,ensemble3,mixed_batches,previous,experiment_norm,global_norm,no_tta,controls_pretrain,wider
	$(PY) scripts/bench/science.py --work .science/seed11 --effects 1.0 --batches 2 --seed 11 \
	    --name science_seed11 --recipes default,mixed_batches

lock:  ## re-resolve constraints.txt from requirements.txt in a scratch venv
	rm -rf /tmp/cellblock-lock && python3.11 -m venv /tmp/cellblock-lock
	/tmp/cellblock-lock/bin/pip install -q -r requirements.txt
	{ head -2 constraints.txt; /tmp/cellblock-lock/bin/pip freeze | grep -viE '^(torch|nvidia|triton)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# cell.sif at the project root from containers/cell.def (the stack of scripts/install.sh, as
# `make env`), with the host's apptainer/singularity or else a local Apptainer set up by
# scripts/apptainer_local.sh. CONTAINER_ARGS: containers/build.sh's options; this build
# machine (no Docker Hub): CONTAINER_ARGS="--cpu --debootstrap --zstd --find-links
# /opt/wheels --ca-certs /usr/local/share/ca-certificates".
CONTAINER_ARGS ?=
.PHONY: container
container:  ## cell.sif from containers/cell.def (PyPI's CUDA torch unless CONTAINER_ARGS=--cpu ...)
	eval "$$(scripts/apptainer_local.sh install)" && containers/build.sh $(CONTAINER_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
