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

.PHONY: run test install uv browser lint

uv:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

install: uv
	$(UV) sync --frozen

$(SECRET_FILE):
	@mkdir -p var
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

run: install $(SECRET_FILE)
	$(WITH_SECRET) $(VENV)/python manage.py migrate --noinput
	@echo "Serving on http://$(HOST):$(PORT)/ (Ctrl+C to stop)"
	$(WITH_SECRET) exec $(VENV)/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

# Debian's Chromium drives the browser test; Playwright cannot download browsers here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "Chromium is missing: install Debian's chromium package for the browser test."; \
		fi; }

test: install browser
	$(VENV)/python -m pytest

lint: install
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy conversations chatsite
