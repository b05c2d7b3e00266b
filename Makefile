# Village Sync — every set-up step lives here so a fresh clone needs nothing else.
# `make help` lists the targets.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install install-browser serve demo test lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

# The browser tests drive Debian's Chromium through Playwright (never Playwright's own browser build,
# which cannot be fetched here). As root on Debian the package is installed where missing;
# elsewhere the tests skip without it (and fail with CI=true).
install-browser:  ## install Debian's chromium and a CJK font for the browser tests (root, apt)
	@if [ -x /usr/bin/chromium ] && fc-list :lang=zh | grep -q .; then echo "chromium: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-noto-cjk; \
	else echo "chromium missing: as root run apt-get install -y chromium fonts-noto-cjk (browser tests skip)"; fi

serve: $(STAMP)  ## start the county server on SQLite with the built-in instruments published
	$(PY) -m server serve

demo: $(STAMP)  ## run the form engine's demo on the built-in instruments (no server needed)
	$(VENV)/bin/village-forms demo

test: $(STAMP) install-browser  ## install, lint, and run the whole test suite (SQLite, PostgreSQL, Chromium)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest --numprocesses auto --maxprocesses 4 --dist loadfile --durations=25

lint: $(STAMP)  ## ruff lint only
	$(VENV)/bin/ruff check .

format: $(STAMP)  ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  ## run the benchmarks and print their tables
	$(PY) -m bench

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build *.egg-info
