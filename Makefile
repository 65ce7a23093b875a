# Two commands set everything up: `make run` serves the app, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# A stable local secret for `make run`, unless SECRET_KEY is given.
SECRET_FILE := var/secret_key
WITH_SECRET = SECRET_KEY="$${SECRET_KEY:-$$(cat $(SECRET_FILE))}"

# Extra CMake arguments for llama.cpp, ";"-separated; "-DGGML_NATIVE=ON" builds it for this CPU
# only (see the README, "The local model's build"). Empty: the portable flags in pyproject.toml.
LLAMA_CMAKE_ARGS ?=
LLAMA_SETTINGS = $(if $(LLAMA_CMAKE_ARGS),--config-settings-package "llama-cpp-python:cmake.args=$(LLAMA_CMAKE_ARGS)")

# The production backends the second test run uses (started by .ci/run in CI).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

.PHONY: run test test-backends install uv browser nginx mcp-servers lint bench mutate

uv:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

install: uv
	$(UV) sync --frozen $(LLAMA_SETTINGS)

$(SECRET_FILE):
	@mkdir -p var
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

run: install $(SECRET_FILE)
	$(WITH_SECRET) $(VENV)/python manage.py migrate --noinput
	$(WITH_SECRET) $(VENV)/python manage.py collectstatic --noinput --verbosity 0
	$(WITH_SECRET) exec $(VENV)/python manage.py serve --host $(HOST) --port $(PORT)

# Debian's Chromium drives the browser test; Playwright cannot download browsers here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "Chromium is missing: install Debian's chromium package for the browser test."; \
		fi; }

# Debian's nginx, for tests/test_load_balancer.py (deploy/nginx.conf in front of three workers).
# The test runs nginx of its own; the package's service, which systemd starts on port 80, is not
# needed (`systemctl disable --now nginx`).
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
		else \
			echo "nginx is missing: install Debian's nginx package for the load balancer test."; \
		fi; }

# A third-party MCP server the tests run (tests/test_mcp_third_party.py), from the npm registry at
# the versions tests/mcp_servers/package-lock.json pins, into that folder only.
MCP_SERVERS_DIR := tests/mcp_servers
mcp-servers: $(MCP_SERVERS_DIR)/node_modules/.package-lock.json

$(MCP_SERVERS_DIR)/node_modules/.package-lock.json: $(MCP_SERVERS_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
		else \
			echo "npm is missing: install Debian's nodejs and npm packages for the MCP tests."; exit 1; \
		fi; }
	cd $(MCP_SERVERS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: install browser nginx mcp-servers
	$(VENV)/lint-imports --no-cache
	$(VENV)/python -m pytest
	$(MAKE) --no-print-directory test-backends

# The suite again on PostgreSQL and channels-redis, as production runs it.
test-backends: install mcp-servers
	@if $(VENV)/python -c 'import socket; [socket.create_connection(("127.0.0.1", p), 2).close() for p in (5432, 6379)]' 2>/dev/null; then \
		DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" $(VENV)/python -m pytest -m "not browser"; \
	elif [ -n "$${CI:-}" ]; then \
		echo "PostgreSQL (5432) or Redis (6379) is not reachable on 127.0.0.1"; exit 1; \
	else \
		echo "Skipped the PostgreSQL + Redis run: start both on 127.0.0.1 to include it."; \
	fi

lint: install
	$(VENV)/lint-imports --no-cache
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	SECRET_KEY=lint $(VENV)/mypy conversations chatsite examples

# Mutation testing of conversations/streaming with its fast tests ([tool.mutmut] in pyproject.toml);
# not part of `make test`. MUTATE="conversations.streaming.tools*" runs one module's mutants only.
MUTATE ?=
mutate: install
	$(VENV)/mutmut run $(MUTATE)
	$(VENV)/mutmut results

# Many live streams through this project, the direct SDK and Chainlit (docs/performance.md).
# The PostgreSQL + Redis part needs both on 127.0.0.1; BENCH_ARGS="--streams 50 --no-peer" etc.
bench: install
	$(VENV)/python bench/run.py $(BENCH_ARGS)
	$(VENV)/python bench/mcp_calls.py
