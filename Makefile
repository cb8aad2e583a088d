# SOA Portal: the two commands. `make demo` runs the portal with demo data; `make test` runs every test.
# Both set up what they need first: a .venv with the project and, on Debian, the system packages.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

DEMO_PACKAGES := slapd ldap-utils redis-server
# systemd and nginx: tests/deploy/test_unit_files.py checks deploy/'s units with `systemd-analyze verify` and its nginx
# site with `nginx -t`, with Debian 12's versions, as production runs them (neither daemon is started).
TEST_PACKAGES := $(DEMO_PACKAGES) chromium systemd nginx
# The browser tests' accessibility check (tests/browser/test_accessibility.py) loads axe-core's script into pages.
AXE_CORE := 4.14.1
AXE_DIR  := var/npm

.PHONY: demo test lint venv demo-packages test-packages npm-package clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "Python 3.11 is required (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# Installs the missing Debian packages when run as root; otherwise prints the exact command and stops.
define ensure_packages
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

demo-packages:
	$(call ensure_packages,$(DEMO_PACKAGES))

test-packages:
	$(call ensure_packages,$(TEST_PACKAGES))
	@command -v npm >/dev/null || $(MAKE) --no-print-directory npm-package
	@grep -qs '"version": "$(AXE_CORE)"' $(AXE_DIR)/node_modules/axe-core/package.json \
	  || { echo "Installing axe-core@$(AXE_CORE) into $(AXE_DIR)"; \
	       npm install --silent --prefix $(AXE_DIR) --no-save --no-package-lock --no-audit --no-fund axe-core@$(AXE_CORE); }

# Only when the machine has no npm of its own (Debian's package, for the axe-core download above).
npm-package:
	$(call ensure_packages,npm)

demo: demo-packages $(STAMP)
	$(PY) -m sandbox.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: test-packages $(STAMP) lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) var .pytest_cache .import_linter_cache test-results
