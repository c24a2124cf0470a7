# abguard developer entry points. `make install` is idempotent; every other target uses .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO  := protos/engine/api/v1/risk.proto
GEN    := engine/api/v1/risk_pb2.py engine/api/v1/risk_pb2.pyi engine/api/v1/risk_pb2_grpc.py
# The modules every evaluation runs, compiled by mypyc (setup.py; engine/compiled.py lists them), rebuilt
# whenever one of them changes. COMPILE=0 keeps the interpreted core (`make pure` removes a build).
COMPILE ?= 1
CORE    := $(VENV)/.compiled
CORE_SRC = $(shell $(PYTHON) engine/compiled.py) engine/compiled.py setup.py
# The one protoc command line: $(call protoc,DIR) writes the $(GEN) files under DIR.
protoc = $(BIN)/python -m grpc_tools.protoc -I protos --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) $(PROTO)

# Locked dependencies (README "Supply chain"): every distribution pinned with its hashes, resolved for Python 3.11
# on Linux x86_64 by pip-compile (`make lock`). build.lock is pip and setuptools, installed first so that the
# sdists (durable-rules) and abguard build with them (--no-build-isolation) instead of with unhashed downloads.
LOCKS      := requirements/runtime.lock requirements/dev.lock requirements/build.lock
DEV_LOCK   := requirements/dev.lock
BUILD_LOCK := requirements/build.lock

.PHONY: install pure proto test lint lint-ruff lint-format lint-mypy lint-bandit check schema serve demo bench quality fuzz clean lock audit

install: $(STAMP) $(GEN) $(if $(filter 1,$(COMPILE)),$(CORE))

$(STAMP): pyproject.toml $(DEV_LOCK) $(BUILD_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(BUILD_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-build-isolation -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

$(CORE): $(STAMP) $(CORE_SRC)
	@echo "compiling the core with mypyc (log: $(VENV)/mypyc.log)"
	@ABGUARD_MYPYC=1 $(BIN)/python setup.py build_ext --inplace > $(VENV)/mypyc.log 2>&1 \
		|| { tail -40 $(VENV)/mypyc.log; exit 1; }
	@# the library's time is the build's (engine/compiled.stale): C that came out unchanged is not recompiled
	@touch engine/core__mypyc*.so $(CORE)

pure:
	find engine -name '*.so' -delete
	rm -rf build $(CORE)

# Generated gRPC code: one command, from protos/, into engine/api/v1 (not committed).
$(GEN) &: $(PROTO) $(STAMP)
	$(call protoc,.)

proto: $(STAMP)
	$(call protoc,.)

# with the compiled core built (COMPILE=1), the tests also require that it is what runs
test: install
	ABGUARD_REQUIRE_COMPILED=$(filter 1,$(COMPILE)) $(BIN)/python -m pytest -q

# `make lint` is its three pieces; .pre-commit-config.yaml runs the same pieces before a commit.
LINTED := engine tests bench scenarios requirements fuzz setup.py
lint: lint-ruff lint-format lint-mypy lint-bandit

lint-ruff: install
	$(BIN)/ruff check $(LINTED)

lint-format: install
	$(BIN)/ruff format --check $(LINTED)

lint-mypy: install
	$(BIN)/mypy

# bandit's checks of code built from data (issue 28: state read back from Redis or the database is data):
# exec (B102), pickle (B301, B403), marshal (B302), eval (B307), yaml.load without SafeLoader (B506)
BANDIT_TESTS := B102,B301,B302,B307,B403,B506
lint-bandit: install
	$(BIN)/bandit -q -r engine -x engine/api/v1 -t $(BANDIT_TESTS)

# Generated files are current, the shipped policies are valid and the locks agree with pyproject.toml.
# buf lint and buf breaking against the released API (CHANGELOG.md); .ci/deps/buf.sh installs buf
BUF ?= $(or $(ABGUARD_BUF_DIR),$(HOME)/.cache/abguard/buf)/node_modules/.bin/buf

check: install
	$(BIN)/python requirements/lockcheck.py
	$(BIN)/abguard policy schema --check policies/schema
	$(BIN)/abguard policy validate policies
	@tmp=$$(mktemp -d) && $(call protoc,$$tmp) && for f in $(GEN); do cmp -s $$tmp/$$f $$f || \
		{ echo "$$f is out of date: run make proto"; rm -rf $$tmp; exit 1; }; done; rm -rf $$tmp
	@bash .ci/deps/buf.sh >/dev/null
	cd protos && $(BUF) lint && $(BUF) breaking --against released/abguard-v1.binpb

# Known vulnerabilities in the locked dependencies (requirements/audit.py: exit 1 for one found, 2 when no
# vulnerability service can be reached, unless ABGUARD_AUDIT_OFFLINE_OK=1).
audit: install
	$(BIN)/python requirements/audit.py

schema: install
	$(BIN)/abguard policy schema --write policies/schema

# The service on the embedded default (SQLite decision log in .data/).
serve: install
	$(BIN)/abguard serve --listen 127.0.0.1:50051 --data-dir .data

# From a fresh clone: set up, start the service in a temporary data dir, stream the
# bundled scenarios through gRPC, print the decision timeline, stop it.
demo: install
	$(BIN)/abguard demo

# Benchmarks print ratios measured in one run; they never fail the build.
bench: install
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_grpc.py
	$(BIN)/python bench/bench_batch.py

# The standard simulation study (docs/simulation.md): the policy's false cut-backs per test-day and
# detection delays, as a table. A benchmark like `bench`: it never fails the build on the numbers.
QUALITY_WORKERS ?= 2
quality: install
	$(BIN)/abguard simulate --standard --workers $(QUALITY_WORKERS)

# Coverage-guided fuzzing (atheris, libFuzzer): each target in fuzz/ for FUZZ_SECONDS, seeded from the scenarios
# and policies (.fuzz/corpus/, kept and grown between runs); an input that breaks an invariant or runs past
# 10 s is saved as .fuzz/crashes/TARGET-crash-* (or -timeout-*). Never part of `make test`, which runs
# tests/test_fuzz.py's small budget instead. The exit status is 1 if any target found something.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := evaluate_proto evaluate_batch evaluate_json policy_yaml when_expr state_blob
fuzz: install
	@mkdir -p .fuzz/crashes && $(BIN)/python -m fuzz.corpus .fuzz/corpus
	@failed=0; for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target for $(FUZZ_SECONDS) s"; \
		$(BIN)/python -m fuzz.$$target -max_total_time=$(FUZZ_SECONDS) -timeout=10 -keep_seed=1 -print_final_stats=1 \
			-artifact_prefix=.fuzz/crashes/$$target- .fuzz/corpus/$$target 2> .fuzz/$$target.log; \
		status=$$?; grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
			.fuzz/$$target.log; \
		if [ $$status -ne 0 ]; then failed=1; echo "$$target FAILED (exit $$status): see .fuzz/$$target.log"; fi; \
	done; exit $$failed

clean: pure
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .fuzz

# Regenerate the locks from pyproject.toml (and requirements/build.in), keeping every pin that still fits;
# `make lock UPGRADE=name` moves one package (and what it needs) to its newest release. The resolution ignores
# this machine's pip configuration (local mirrors, find-links): the hashes are those of the public index alone.
# dev.lock is constrained by runtime.lock and build.lock by dev.lock, so a package shared by two locks has one pin.
# (not PIP_COMPILE: pip reads every PIP_* variable of the environment as one of its options)
LOCK_TOOL ?= $(BIN)/pip-compile
LOCK_ENV    := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND='make lock'
LOCK_OPTS   := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
# UPGRADE goes only to the compiles whose lock already pins it: pip-compile adds an --upgrade-package it is
# given (`ruff==0.6.9`) to the lock even when nothing there needs it (measured: ruff landed in runtime.lock).
UPGRADE_NAME = $(shell echo '$(UPGRADE)' | sed -E 's/[][<>=!~ ;].*//' | tr 'A-Z_.' 'a-z--')
upgrade      = $(if $(UPGRADE),$$(grep -qiE '^$(UPGRADE_NAME)==' $(1) && echo --upgrade-package '$(UPGRADE)'))
lock: $(if $(filter $(BIN)/pip-compile,$(LOCK_TOOL)),$(STAMP))
	$(if $(UPGRADE),@grep -qiE '^$(UPGRADE_NAME)==' $(LOCKS) || { echo "make lock: no lock pins $(UPGRADE_NAME)"; exit 1; })
	$(LOCK_ENV) $(LOCK_TOOL) $(LOCK_OPTS) $(call upgrade,requirements/runtime.lock) --extra compile \
		-o requirements/runtime.lock pyproject.toml
	$(LOCK_ENV) $(LOCK_TOOL) $(LOCK_OPTS) $(call upgrade,requirements/dev.lock) --extra dev -c requirements/runtime.lock \
		-o requirements/dev.lock pyproject.toml
	$(LOCK_ENV) $(LOCK_TOOL) $(LOCK_OPTS) $(call upgrade,requirements/build.lock) -c requirements/dev.lock \
		-o requirements/build.lock requirements/build.in
	$(PYTHON) requirements/lockcheck.py --stamp
