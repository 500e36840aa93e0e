# The two set-up commands of the README: `make demo` (main job) and `make test` (the test suite, used by CI).
# Both install what they need first, so they work on a fresh clone with ../shared/ beside it.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: install install-test demo test lint

install:
	$(PIP) torch==2.13.0          # the CPU build; a bare newer torch would pull a multi-GB CUDA build
	$(PIP) -e .

install-test:
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	@# Debian's prometheus (the real scraper + promtool) and docker-compose (validates docker-compose.yml, no engine needed)
	@{ command -v promtool && command -v docker-compose; } >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus docker-compose >/dev/null; } || echo "warning: could not install Debian's prometheus/docker-compose; the tests that need them will be skipped"

demo: install
	hailstream demo

lint:
	$(PYTHON) -m ruff check models stream tests bench
	$(PYTHON) -m mypy

test: install-test lint
	$(PYTHON) -m pytest
