# Two commands on a fresh machine:  make run  (caption examples/)  and  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/captioner caption examples/ --out captions.jsonl
	@cat captions.jsonl
	$(BIN)/captioner activity examples/ --out activities.jsonl
	@cat activities.jsonl

test: $(STAMP)
	-.ci/ensure-browser
	-.ci/ensure-nginx
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check captioner service tests bench
	$(BIN)/ruff format --check captioner service tests bench

bench: $(STAMP)
	$(BIN)/python bench/beam_batching.py
	$(BIN)/python bench/caption_folder.py
	$(BIN)/python bench/feature_cache.py
	$(BIN)/python bench/activity_clip.py
	$(BIN)/python bench/service_load.py
	$(BIN)/python bench/image_bombs.py
	$(BIN)/python bench/timeline_accuracy.py
	$(BIN)/python bench/tags_overhead.py

clean:
	rm -rf $(VENV) captions.jsonl activities.jsonl .pytest_cache
