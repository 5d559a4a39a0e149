# The README's commands. Everything the project needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_ROWS_IMAGE ?= 100000
DEMO_ROWS_AUDIO ?= 20000

.PHONY: install demo dev test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m dataset_assets.local.demo --image-rows $(DEMO_ROWS_IMAGE) --audio-rows $(DEMO_ROWS_AUDIO)

dev: install
	$(PY) -m dataset_assets.local.dev

test: install
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	-$(PY) -c "from dataset_assets.local.embedded import stop_embedded; stop_embedded()" 2>/dev/null
	rm -rf .local
