# The README's commands. Everything the project needs is installed from here: uv (a pinned
# version, bootstrapped with the machine's pip into .tools/) installs exactly the versions in
# uv.lock into .venv, plus the project in editable mode.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9
UV_DIR := .tools/uv-$(UV_VERSION)
UV     := $(UV_DIR)/bin/uv
# never download a Python: use $(PYTHON)
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
DEMO_ROWS_IMAGE ?= 100000
DEMO_ROWS_AUDIO ?= 20000

.PHONY: install lock lint demo dev test test-unit test-integration test-e2e test-fast bench bench-refresh bench-writer clean

# pip --target needs no venv; where there is no pip, a small venv brings one
$(UV):
	$(PYTHON) -m pip install -q --disable-pip-version-check --target $(UV_DIR) uv==$(UV_VERSION) \
	  || { $(PYTHON) -m venv $(UV_DIR)/venv && $(UV_DIR)/venv/bin/pip install -q uv==$(UV_VERSION) \
	       && mkdir -p $(UV_DIR)/bin && ln -sf ../venv/bin/uv $(UV); }

# --locked: uv.lock must match pyproject.toml (else: make lock, and commit uv.lock)
# --compile-bytecode: every module installed is compiled once here (about 30 s), as pip does by
# default and uv does not. Without it, a machine that sets PYTHONDONTWRITEBYTECODE=1 (this kind
# does) compiled numpy, pyarrow, polars and dagster from source in every process: 0.3-0.5 s more
# per export's start-up, more in every Dagster step process (bench/README.md, "Start-up").
$(STAMP): pyproject.toml uv.lock Makefile | $(UV)
	$(UV_ENV) $(UV) sync --locked --compile-bytecode --extra test --extra bench --python $(PYTHON)
	touch $(STAMP)

# the project's own modules too (an editable install is not compiled by uv); only what changed
install: $(STAMP)
	@$(PY) -m compileall -q dataset_assets bench > /dev/null

# after a change of the dependencies in pyproject.toml; `$(UV) lock --upgrade-package NAME` moves one
lock: | $(UV)
	$(UV_ENV) $(UV) lock --python $(PYTHON)

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m dataset_assets.local.demo --image-rows $(DEMO_ROWS_IMAGE) --audio-rows $(DEMO_ROWS_AUDIO)

dev: install
	$(PY) -m dataset_assets.local.dev

# everything (CI): the lint, then the e2e tier in a pytest process of its own beside the unit and
# integration tiers in another. The e2e tier (a daemon's runs and their step processes) took 6 min 35 s
# beside their 11 min 52 s in a clean clone's 12 min 41 s (2026-12-02 17:55, a machine half as fast as
# the one of 14:27, where it was 9 min 10 s beside 10 min 22 s before bytecode was compiled at
# install; the same machine in a faster phase, 22:10: 4 min 54 s beside 8 min 8 s in 8 min 47 s),
# so it starts first; its output follows.
E2E_LOG := .local/test-e2e.log
test: lint
	@mkdir -p .local; \
	$(PYTEST) tests/e2e > $(E2E_LOG) 2>&1 & e2e=$$!; \
	$(PYTEST) tests/unit tests/integration; others=$$?; \
	wait $$e2e; e2e_status=$$?; \
	echo "---- tests/e2e (ran beside tests/unit and tests/integration) ----"; cat $(E2E_LOG); \
	test $$others -eq 0 -a $$e2e_status -eq 0

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration

test-e2e: install
	$(PYTEST) tests/e2e

test-fast: install
	$(PYTEST) tests/unit tests/integration

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# what a refresh costs after each kind of catalogue change, against a full export (bench/README.md, "Refresh")
bench-refresh: install
	$(PY) bench/refresh.py

# what each parquet writer option costs on the same rows (bench/README.md, "Where the time goes")
bench-writer: install
	$(PY) bench/writer_options.py $(BENCH_ARGS)

clean:
	-$(PY) -c "from dataset_assets.local.embedded import stop_embedded; stop_embedded()" 2>/dev/null
	rm -rf .local
