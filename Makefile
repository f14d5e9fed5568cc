# Two commands on a fresh machine: `make demo` and `make test`. Everything comes from pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo test down lint typecheck bench clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The primary region dies at 10:02: the health monitor sees it from a quorum of vantage points
# and starts the promotion by itself; the demo ends with the failover's HTML review. The lab
# stays up afterwards so the run can be explored in the Temporal UI; `make down` stops it.
demo: $(STAMP)
	$(BIN)/drctl lab down >/dev/null
	$(BIN)/drctl lab up --detach
	$(BIN)/drctl lab status --wait 30
	$(BIN)/drctl monitor start --system lab
	$(BIN)/drctl monitor status --system lab
	$(BIN)/drctl lab chaos kill primary
	$(BIN)/drctl status --system lab --wait 120
	$(BIN)/drctl monitor status --system lab
	$(BIN)/drctl lab alerts
	$(BIN)/drctl report dr-promotion/lab --format html -o .lab/reports/failover.html
	@echo "open the failover's review: $(CURDIR)/.lab/reports/failover.html"

down:
	@if [ -x $(BIN)/drctl ]; then $(BIN)/drctl lab down; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The HTML review report is tested in a real browser: Debian's Chromium, which Playwright only
# drives (it never downloads a browser of its own here).
chromium:
	@command -v chromium >/dev/null || ($(APT) install -y chromium || ($(APT) update && $(APT) install -y chromium))

# Two test processes at most (a 2-core box is the target), each running whole modules: a
# module's lab stays with one process. One process where there is one core.
test: $(STAMP) lint typecheck chromium
	$(BIN)/pytest -q --numprocesses=auto --maxprocesses=2 --dist loadfile --durations=30

bench: $(STAMP)
	$(BIN)/python -m bench

clean: down
	rm -rf $(VENV) .lab .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
