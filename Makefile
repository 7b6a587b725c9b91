# Every target creates and uses .venv itself: `make demo` and `make test` work on a fresh clone.
# The newest CPython >= 3.11 on the machine; see tools/find-python for why.
PYTHON ?= $(shell tools/find-python)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean venv compiled pure system-deps rrdtool-check docs dist

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The per-request modules compiled to C extensions with mypyc (the list is in
# setup.py), rebuilt when one of them changes: a stale compiled module would
# shadow an edited source file. `make pure` removes them again.
COMPILED_SOURCES := $(shell sed -n 's|^    "\(src/ecosys/.*\.py\)",$$|\1|p' setup.py)
COMPILED_STAMP := $(VENV)/.compiled

$(COMPILED_STAMP): $(STAMP) setup.py $(COMPILED_SOURCES)
	ECOSYS_COMPILE=1 $(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(COMPILED_STAMP)

compiled: $(COMPILED_STAMP)

pure:
	rm -f $(COMPILED_STAMP) src/*.so src/ecosys/*.so src/ecosys/*/*.so

# What the demo needs and no more (no test or lint tools), so a first
# `make demo` on a fresh clone spends its time on the demo, not on installs.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[fast]'
	touch $(RUN_STAMP)

DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

RELEASE_STAMP := $(VENV)/.installed-release

$(RELEASE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,release]'
	touch $(RELEASE_STAMP)

# Programs from the OS the tests need: rrdtool for the RRD telemetry example
# (fonts-dejavu-core so its graphs can draw text). Installed when missing and
# we may (root, or passwordless sudo); otherwise a warning, and that test skips.
# Also node (Node.js >= 18) for the JavaScript client's tests (tests/test_js_client.py),
# which fail rather than skip without it.
system-deps:
	@if ! command -v rrdtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing rrdtool"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends rrdtool fonts-dejavu-core >/dev/null; \
	  else echo "warning: rrdtool is missing and cannot be installed here; the RRD example test will skip" >&2; fi; \
	fi
	@if ! command -v node >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs >/dev/null; \
	  else echo "warning: node is missing and cannot be installed here; the JavaScript client test will fail" >&2; fi; \
	fi

rrdtool-check:
	@if command -v rrdtool >/dev/null 2>&1; then rrdtool --version | head -n 1; else \
	  echo "rrdtool is not installed; as root: apt-get update && apt-get install -y --no-install-recommends rrdtool fonts-dejavu-core" >&2; \
	  exit 1; fi

# The Fun Factory: seven services, a client, a live view; the tracker is killed
# with SIGKILL 8 s in and restarted, and the summary shows nothing was lost.
demo: $(RUN_STAMP)
	$(PY) examples/fun_factory/run.py --duration 20 --rate 40 --kill-tracker-at 8

# The whole suite on the compiled build, then the tests of the compiled modules
# themselves on their pure Python source (tests/purepython.py), so both builds
# a user can install stay tested.
PURE_TESTS := tests/test_protocol_unit.py tests/test_protocol_wire.py tests/test_clients.py \
	tests/test_deadlines.py tests/test_queued_endpoint.py tests/test_build.py

test: system-deps $(COMPILED_STAMP)
	ECOSYS_EXPECT_COMPILED=1 $(PY) -m pytest -q
	ECOSYS_PURE=1 $(PY) -m pytest -q $(PURE_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check setup.py src tests examples benchmarks clients
	$(VENV)/bin/mypy src

bench: $(COMPILED_STAMP)
	$(PY) benchmarks/ping_pong/run.py
	$(PY) benchmarks/queues/run.py

# The documentation site (mkdocs.yml, pages in docs/), built into site/; warnings fail it.
docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# The release archives: sdist and wheel in dist/, checked as PyPI would (twine check --strict).
dist: $(RELEASE_STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist
	$(VENV)/bin/twine check --strict dist/*

clean: pure
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
