# Two commands on a fresh machine:  make run  (caption examples/)  and  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every install takes the exact tested versions (constraints.txt); pyproject.toml has the ranges.
PIP    := $(BIN)/pip install --quiet -c constraints.txt
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev

.PHONY: install install-dev run test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The runtime only: what `make run` (and a user's `pip install captioner`) needs.
$(BASE): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

# The extras on top: [dev] pulls [data], [export] and [tensorboard] with the test tools.
$(DEV): $(BASE)
	$(PIP) -e '.[dev]'
	touch $@

install: $(BASE)

install-dev: $(DEV)

run: $(BASE)
	$(BIN)/captioner caption examples/ --out captions.jsonl
	@cat captions.jsonl
	$(BIN)/captioner activity examples/ --out activities.jsonl
	@cat activities.jsonl

test: $(DEV)
	-.ci/ensure-browser
	-.ci/ensure-nginx
	$(BIN)/python -m pytest

test-fast: $(DEV)
	$(BIN)/python -m pytest -m "not slow"

lint: $(DEV)
	$(BIN)/ruff check captioner service tests bench scripts
	$(BIN)/ruff format --check captioner service tests bench scripts

bench: $(DEV)
	$(BIN)/python bench/beam_batching.py
	$(BIN)/python bench/caption_folder.py
	$(BIN)/python bench/feature_cache.py
	$(BIN)/python bench/activity_clip.py
	$(BIN)/python bench/service_load.py
	$(BIN)/python bench/image_bombs.py
	$(BIN)/python bench/timeline_accuracy.py
	$(BIN)/python bench/tags_overhead.py
	$(BIN)/python bench/grounding_overhead.py
	$(BIN)/python bench/omp_wait.py
	$(BIN)/python bench/motion_cost.py
	$(BIN)/python bench/describe_cost.py
	$(BIN)/python bench/describe_accuracy.py
	$(BIN)/python bench/encoder_runtime.py
	$(BIN)/python bench/slow_clients.py
	$(BIN)/python bench/clip_reading.py
	$(BIN)/python bench/service_peers.py
	$(BIN)/python bench/ray_engine.py

clean:
	rm -rf $(VENV) captions.jsonl activities.jsonl .pytest_cache
