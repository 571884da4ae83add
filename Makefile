# Set-up and everyday commands. Everything installs from uv.lock into .venv.
# Needs only python3 (>= 3.11) and make; uv is installed into .uv/ when it is not on PATH.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
# Offline operation: litellm's bundled price table, and tiktoken encodings shipped in litellm.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export NO_MKDOCS_2_WARNING := 1
export UV_COMPILE_BYTECODE := 1

.PHONY: serve test lint docs bench venv redis postgres wrk clean

# `make serve PORT=8001` listens on another port; so does HUBBUB_SERVER__PORT=8001.
serve: .venv/.synced  ## Run the reference server on its embedded defaults (127.0.0.1:8000).
	.venv/bin/hubbub serve$(if $(PORT), --port $(PORT))

test: .venv/.synced redis postgres  ## Run the whole test suite.
	.venv/bin/pytest

lint: .venv/.synced  ## Lint, format check and type check.
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

docs: .venv/.synced  ## Build the documentation site into site/.
	.venv/bin/mkdocs build --strict

bench: .venv/.synced wrk  ## Run every benchmark under bench/.
	.venv/bin/python bench/run_all.py

venv: .venv/.synced

.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

# Tests start their own redis-server processes; install it when missing (Debian, as root).
redis:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found; installing it from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# Tests start their own throwaway PostgreSQL clusters (tests/postgres_support.py); install the
# server when missing (Debian, as root; its own cluster is not used).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "PostgreSQL not found; installing it from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The HTTP benchmarks load the servers with wrk (Debian package, as root).
wrk:
	@command -v wrk >/dev/null || { \
	  echo "wrk not found; installing it from Debian packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

clean:
	rm -rf .venv .uv site
