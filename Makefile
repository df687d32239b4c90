# Listy: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -q
export PYO3_PYTHON := $(abspath $(PY))
MATRIX ?= sqlite+local sqlite+memcached postgres+memcached mariadb+memcached

.PHONY: help venv test-deps build wheel sdist test-wheel check-cross typecheck demo test test-rust test-python test-django6 build-django6 test-django6-matrix test-python-matrix test-suites bench clean

help: ## show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY) ## create .venv (python3.11) with what building Listy needs (maturin, Django)
	$(PY) -m pip install -q "maturin>=1.16,<2" "Django>=5.2"

test-deps: venv ## install the test requirements (requirements-dev.txt) into .venv
	$(PY) -m pip install -q -r requirements-dev.txt

build: venv ## build the Rust extension (release) into .venv: maturin develop --release
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

# Wheels: abi3 (one wheel for every CPython >= 3.11), manylinux_2_28, linked
# by zig (ziglang from PyPI) so that the host's newer glibc does not leak in.
# Their own target dir: switching linkers would rebuild `make build`'s.
WHEEL_TARGETS ?= x86_64-unknown-linux-gnu
wheel: venv ## build abi3 manylinux_2_28 wheels into dist/ (WHEEL_TARGETS="x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu")
	$(PY) -m pip install -q "ziglang>=0.13"
	@for t in $(WHEEL_TARGETS); do \
	  PATH=$(abspath $(VENV))/bin:$$PATH CARGO_TARGET_DIR=target/wheel $(VENV)/bin/maturin build --release --zig \
	    --compatibility manylinux_2_28 --target $$t --out dist || exit 1; \
	done

# The release workflow builds macOS and Windows wheels on their own runners;
# here the code is type-checked for them, zig standing in as ring's C compiler.
ZIGCC = $(abspath $(PY)) -m ziglang cc
check-cross: venv ## cargo check of the bindings for Windows (x86_64-pc-windows-gnu) and macOS (x86_64-apple-darwin)
	$(PY) -m pip install -q "ziglang>=0.13"
	rustup target add x86_64-pc-windows-gnu x86_64-apple-darwin
	CC_x86_64_pc_windows_gnu="$(ZIGCC) -target x86_64-windows-gnu" cargo check -p listy-py --target x86_64-pc-windows-gnu
	CC_x86_64_apple_darwin="$(ZIGCC) -target x86_64-macos" cargo check -p listy-py --target x86_64-apple-darwin

sdist: venv ## build the source distribution into dist/
	$(VENV)/bin/maturin sdist --out dist

test-wheel: wheel ## install dist/'s wheel with --no-index --only-binary into a fresh venv, no compiler on PATH, and smoke-test it
	scripts/test_wheel.sh $(PYTHON)

demo: build ## run the example project (SQLite, embedded store; LISTY_SERVERS=host:port for memcached)
	cd example && $(abspath $(PY)) manage.py migrate --verbosity 0 && $(abspath $(PY)) manage.py demo

test: test-rust typecheck test-suites test-wheel ## everything: fmt, clippy, cargo test, mypy, the pytest matrices (Django 5.2 and 6, side by side), the wheel

test-rust: venv ## cargo fmt --check, clippy -D warnings, cargo test
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

typecheck: test-deps build ## mypy --strict over python/listy (pyproject.toml), and stubtest: listy/_native.pyi against the built extension
	$(PY) -m mypy
	MYPYPATH=python $(PY) -m mypy.stubtest listy._native --allowlist tests/stubtest_allowlist.txt

test-python: test-deps build test-python-matrix ## pytest on sqlite+local, sqlite+memcached, postgres+memcached, mariadb+memcached

test-python-matrix:
	@status=0; for cfg in $(MATRIX); do \
	  echo "== pytest LISTY_TEST_DB=$${cfg%%+*} LISTY_TEST_STORE=$${cfg##*+}"; \
	  LISTY_TEST_DB=$${cfg%%+*} LISTY_TEST_STORE=$${cfg##*+} $(PYTEST) || status=1; \
	done; exit $$status

# Django 6 needs Python >= 3.12: a second venv, the same abi3 extension.
PYTHON312 ?= $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c '' 2>/dev/null && command -v python3.12 || ls -d $$HOME/.pyenv/versions/3.12.*/bin/python 2>/dev/null | tail -1)
VENV_DJ6 ?= .venv-dj6
PY_DJ6 := $(VENV_DJ6)/bin/python
MATRIX_DJ6 ?= sqlite+memcached postgres+memcached

$(PY_DJ6):
	@test -n "$(PYTHON312)" || { echo "test-django6: no Python 3.12 found (set PYTHON312=...)" >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV_DJ6)
	$(PY_DJ6) -m pip install -q --upgrade pip

build-django6: $(PY_DJ6) ## install the test requirements with Django 6 into .venv-dj6 and build Listy into it
	$(PY_DJ6) -m pip install -q -r requirements-dev.txt "Django>=6,<7"
	VIRTUAL_ENV=$(abspath $(VENV_DJ6)) PYO3_PYTHON=$(abspath $(PY_DJ6)) $(VENV_DJ6)/bin/maturin develop --release --quiet

test-django6: build-django6 test-django6-matrix ## Django 6.x on Python 3.12 (.venv-dj6): pytest on sqlite+memcached, postgres+memcached

test-django6-matrix:
	@$(PY_DJ6) -c 'import django, sys; print("== Django", django.get_version(), "on Python", sys.version.split()[0])'
	@status=0; for cfg in $(MATRIX_DJ6); do \
	  echo "== pytest (Django 6) LISTY_TEST_DB=$${cfg%%+*} LISTY_TEST_STORE=$${cfg##*+}"; \
	  LISTY_TEST_DB=$${cfg%%+*} LISTY_TEST_STORE=$${cfg##*+} $(PY_DJ6) -m pytest -q -p no:cacheprovider || status=1; \
	done; exit $$status

# The two matrices run side by side: their test databases, replication
# slots and memcached servers are per process (tests/settings.py,
# tests/conftest.py), and both import the one abi3 extension built before
# they start. Django 6's lane prints its output when it is done.
test-suites: test-deps build build-django6 ## the pytest matrices of Django 5.2 (test-python) and Django 6 (test-django6) side by side
	@$(MAKE) --no-print-directory test-django6-matrix > .test-django6.log 2>&1 & lane=$$!; \
	status=0; $(MAKE) --no-print-directory test-python-matrix || status=1; \
	wait $$lane || status=1; echo "== Django 6 lane"; cat .test-django6.log; exit $$status

STRESS_RUNS ?= 20
.PHONY: stress
stress: test-deps build ## the high-contention stress (tests/test_contention.py, kills) STRESS_RUNS times on PostgreSQL and MariaDB with memcached
	@fails=0; for i in $$(seq $(STRESS_RUNS)); do for db in postgres mariadb; do \
	  LISTY_STRESS=1 LISTY_CONTENTION_SEED=$$((i*6)) LISTY_TEST_DB=$$db LISTY_TEST_STORE=memcached $(PYTEST) tests/test_contention.py tests/test_kill.py -k "contended" -p no:cacheprovider || fails=$$((fails+1)); \
	done; done; echo "stress: $$fails failed runs of $$(( $(STRESS_RUNS) * 2 ))"; test $$fails -eq 0

bench: ## run the side-by-side benchmark (bench/run.sh; builds its own bench/.venv)
	@if [ -f bench/run.sh ]; then bash bench/run.sh $(BENCH_ARGS); else echo "bench/run.sh not there yet"; fi

clean: ## remove build outputs and the example database
	rm -rf target $(VENV) example/db.sqlite3 .pytest_cache

FUZZ_TARGETS ?= decode_list list_roundtrip reply_parser pgoutput
FUZZ_TIME ?= 600
.PHONY: fuzz
fuzz: ## run each cargo-fuzz target in fuzz/ for FUZZ_TIME seconds, one job (stable via RUSTC_BOOTSTRAP=1)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cargo test --manifest-path fuzz/Cargo.toml -q -- --include-ignored write_seeds
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== cargo fuzz run $$t ($(FUZZ_TIME)s)"; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_TIME) -print_final_stats=1 || exit 1; \
	done
