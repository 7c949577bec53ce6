# The two commands of the README. Both set everything up first when needed.
SHELL := /bin/bash
VENV := .venv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow lock ui clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/emotionthinker demo

test: setup
	$(VENV)/bin/python -m pytest -q

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

ui: setup
	$(VENV)/bin/emotionthinker ui

# Regenerate the lock after changing pyproject dependencies.
lock:
	$(VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf var
