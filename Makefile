# gilfree's task file: `make help` lists the recipes.
#
# One virtual environment per supported Python, each with gilfree installed
# in editable mode (`pip install -e ".[test]"`), lives in .venv/<version>/.
# A stamp file in each records that the install is current; it is redone only
# when pyproject.toml, setup.py or a C source or header changed, since that
# is when the extension must be rebuilt (Python files are picked up live).
#
# Build switches (read by setup.py): GILFREE_WERROR=1, GILFREE_DEBUG=1,
# GILFREE_SANITIZE=address|undefined|thread.  Changing one does not touch
# the stamps: run `make rebuild` after changing them.

SHELL := bash
.SHELLFLAGS := -e -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYVERSIONS ?= 3.11 3.12 3.13
# `make bench` runs on 3.13: the fastest of the three interpreters and the
# first whose own-GIL sub-interpreters are usable (3.12.1 crashes on several
# stdlib imports in workers, see shared/notes/subinterpreters.md), so it is
# the one where every backend can show what it does; 3.11 has no
# sub-interpreters at all.
BENCH_PY ?= 3.13
VENV := .venv
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
PYTEST_ARGS ?= -q
BENCH_ARGS ?=
# Wall-clock backstops, in seconds, for a run that hangs in a way the
# per-test timeout (pyproject.toml) cannot stop; they keep `make test`
# inside CI's 90 minutes (3 x 8 + 15 + 3 x 12 + 2 = 77 at the very worst).
PYTEST_WALL_TIMEOUT ?= 720
C_TESTS_WALL_TIMEOUT ?= 480
# timeout(1) normally moves the command into a process group of its own, so
# that it can kill the whole group; at a terminal that would keep Ctrl-C from
# reaching pytest, so there it stays in the foreground group instead.
TIMEOUT = timeout $$([ -t 0 ] && echo --foreground) --kill-after=30

# What the extension is built from: a change to any of these rebuilds it.
EXT_INPUTS := pyproject.toml setup.py \
    $(wildcard src/gilfree/_core/*.c src/gilfree/_core/*.h \
               src/runtime/*.c src/runtime/*.h include/*.h)

# Prints the path of a Python of the given minor version (3.12) or nothing:
# the newest pyenv patch release of it (not a free-threaded "t" build), else
# pythonX.Y on PATH. Each candidate must really be that version.
define FIND_PYTHON
find_python() { \
  local v=$$1 root c; \
  root=$${PYENV_ROOT:-$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv")}; \
  for c in $$(ls -d "$$root"/versions/$$v.* 2>/dev/null \
                | grep -E "/$${v//./\\.}\.[0-9]+$$" | sort -rV \
                | sed 's|$$|/bin/python'"$$v"'|') \
           $$(command -v "python$$v" 2>/dev/null || true); do \
    if [ -x "$$c" ] && "$$c" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$$v'.split('.'))))" 2>/dev/null; then \
      echo "$$c"; return 0; \
    fi; \
  done; \
}
endef

.PHONY: help
help:
	@echo "gilfree tasks:"
	@echo "  make bench        build, install and run 'python -m gilfree bench' (Python $(BENCH_PY))"
	@echo "  make test         every test: C runtime tests (plain, ASan+UBSan, TSan), then pytest on $(PYVERSIONS)"
	@echo "  make venvs        create .venv/<version> for $(PYVERSIONS) and 'pip install -e .[test]' into each"
	@echo "  make test-c       C runtime tests; also test-c-asan, test-c-tsan"
	@echo "  make test-py      pytest on every Python; test-py-3.12 for one; PYTEST_ARGS='-x -k name' to pass options"
	@echo "  make test-py-asan pytest on $(ASAN_PY) against an ASan+UBSan build of the extension"
	@echo "  make rebuild      rebuild the extension in every venv (after changing GILFREE_* switches)"
	@echo "  make clean        remove build outputs (keeps the venvs); distclean also removes .venv"

# ---------------------------------------------------------------- venvs

.PHONY: venvs
venvs: $(foreach v,$(PYVERSIONS),$(VENV)/$(v)/.installed)

# The lock serialises pip across parallel make jobs and concurrent `make`
# runs in one tree: they would otherwise race on src/gilfree.egg-info.
$(VENV)/%/.installed: $(EXT_INPUTS)
	@$(FIND_PYTHON); \
	py=$$(find_python $*); \
	if [ -z "$$py" ]; then \
	  echo "error: Python $* not found (looked in $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$*.* and for python$* on PATH)." >&2; \
	  echo "       Install it (pyenv install $*) or leave it out: make PYVERSIONS='...'" >&2; \
	  exit 1; \
	fi; \
	if ! $(VENV)/$*/bin/python -c '' 2>/dev/null; then \
	  echo "==> creating $(VENV)/$* from $$py"; \
	  rm -rf $(VENV)/$*; \
	  "$$py" -m venv $(VENV)/$*; \
	fi; \
	echo "==> building gilfree into $(VENV)/$* (Python $$($(VENV)/$*/bin/python -c 'import platform; print(platform.python_version())'))"; \
	mkdir -p $(VENV); \
	flock $(VENV)/.lock $(VENV)/$*/bin/python -m pip install -q -e ".[test]"; \
	$(VENV)/$*/bin/python -c 'import gilfree._core' \
	  || { echo "error: gilfree._core does not import in $(VENV)/$*" >&2; exit 1; }; \
	touch $@

.PHONY: rebuild
rebuild:
	rm -f $(foreach v,$(PYVERSIONS),$(VENV)/$(v)/.installed)
	$(MAKE) --no-print-directory venvs

# ---------------------------------------------------------------- C tests

# tests/c/c-tests.mk defines test-c, test-c-asan and test-c-tsan.
ifneq ($(wildcard tests/c/c-tests.mk),)
include tests/c/c-tests.mk
else
.PHONY: test-c test-c-asan test-c-tsan
test-c test-c-asan test-c-tsan:
	@echo "error: tests/c/c-tests.mk is missing, so there is no '$@' recipe" >&2; exit 1
endif

# ---------------------------------------------------------------- Python tests

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# Every version runs even when an earlier one failed; the summary names them.
.PHONY: test-py
test-py: venvs
	@failed=""; \
	for v in $(PYVERSIONS); do \
	  $(MAKE) --no-print-directory test-py-$$v || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-py: FAILED on Python$$failed" >&2; exit 1; fi; \
	echo "test-py: passed on Python $(PYVERSIONS)"

# PYTHONMALLOC=debug: CPython's debug allocator checks every block it frees,
# so a use-after-free or overrun in the extension fails the run where it
# happens instead of corrupting memory quietly.
test-py-%: $(VENV)/%/.installed
	@echo "==> pytest on Python $* ($(VENV)/$*)"; \
	rc=0; \
	PYTHONMALLOC=debug $(TIMEOUT) $(PYTEST_WALL_TIMEOUT) \
	  $(VENV)/$*/bin/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	case $$rc in \
	  0) ;; \
	  5) echo "error: pytest collected no tests on Python $*" >&2; exit 1 ;; \
	  124|137) echo "error: pytest on Python $* ran past $(PYTEST_WALL_TIMEOUT)s and was killed" >&2; exit 1 ;; \
	  *) exit $$rc ;; \
	esac

# ---------------------------------------------------------------- everything

# The Python suite against an extension built with ASan+UBSan, on one Python
# (the extension's C is the same on every version; 3.13 is the one where
# every backend runs).  A regular install into its own venv under build/,
# so the editable venvs' extensions in src/ are left alone.  The sanitizer
# runtime is preloaded because python itself is not built with it;
# PYTHONMALLOC=malloc hands every Python allocation to ASan; leaks are not
# checked (CPython keeps interned objects until exit).  handle_segv=0: a
# segfault is not an ASan finding (memory errors are caught by the
# instrumentation, before any fault); the fault suite crashes workers on
# purpose and checks that they die by SIGSEGV, which ASan's handler would
# turn into SIGABRT.
ASAN_PY ?= 3.13
ASAN_VENV := build/asan-venv
.PHONY: test-py-asan
test-py-asan:
	@$(FIND_PYTHON); py=$$(find_python $(ASAN_PY)); \
	if [ -z "$$py" ]; then echo "error: Python $(ASAN_PY) not found" >&2; exit 1; fi; \
	$(ASAN_VENV)/bin/python -c '' 2>/dev/null || "$$py" -m venv $(ASAN_VENV); \
	echo "==> building gilfree with ASan+UBSan into $(ASAN_VENV)"; \
	GILFREE_SANITIZE=address GILFREE_DEBUG=1 $(ASAN_VENV)/bin/python -m pip install -q \
	  --force-reinstall ".[test]"; \
	echo "==> pytest on Python $(ASAN_PY) with the sanitized extension"; \
	rc=0; \
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_segv=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(TIMEOUT) $(PYTEST_WALL_TIMEOUT) $(ASAN_VENV)/bin/python -m pytest $(PYTEST_ARGS) \
	  || rc=$$?; \
	case $$rc in 0) ;; 5) echo "error: pytest collected no tests" >&2; exit 1 ;; *) exit $$rc ;; esac

# Each section runs even when an earlier one failed (except that Python tests
# need the venvs), so one CI run reports every broken part at once.
.PHONY: test
test:
	@failed=""; total_start=$$(date +%s); \
	section() { \
	  local name=$$1 limit=$$2 start rc=0; shift 2; \
	  printf '\n======== %s ========\n' "$$name"; \
	  start=$$(date +%s); \
	  $(TIMEOUT) "$$limit" "$$@" || rc=$$?; \
	  if [ $$rc -eq 0 ]; then \
	    printf -- '-------- %s: ok (%ss)\n' "$$name" $$(( $$(date +%s) - start )); \
	  else \
	    [ $$rc -eq 124 ] && echo "$$name: killed after $${limit}s" >&2; \
	    printf -- '-------- %s: FAILED, exit %s (%ss)\n' "$$name" $$rc $$(( $$(date +%s) - start )); \
	    failed="$$failed $$name"; \
	  fi; \
	  return $$rc; \
	}; \
	section test-c        $(C_TESTS_WALL_TIMEOUT) $(MAKE) -j$$(nproc) --no-print-directory test-c || true; \
	section test-c-asan   $(C_TESTS_WALL_TIMEOUT) $(MAKE) -j$$(nproc) --no-print-directory test-c-asan || true; \
	section test-c-tsan   $(C_TESTS_WALL_TIMEOUT) $(MAKE) -j$$(nproc) --no-print-directory test-c-tsan || true; \
	if section venvs 900 $(MAKE) --no-print-directory venvs; then \
	  section test-py $$(( 3 * $(PYTEST_WALL_TIMEOUT) + 120 )) $(MAKE) --no-print-directory test-py || true; \
	  section test-py-asan $$(( $(PYTEST_WALL_TIMEOUT) + 300 )) $(MAKE) --no-print-directory test-py-asan || true; \
	else \
	  echo "test-py: skipped, the venvs did not build" >&2; failed="$$failed test-py"; \
	fi; \
	printf '\n======== summary (%ss) ========\n' $$(( $$(date +%s) - total_start )); \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi; \
	echo "all test sections passed"

# ---------------------------------------------------------------- bench

.PHONY: bench
bench: $(VENV)/$(BENCH_PY)/.installed $(VENV)/$(BENCH_PY)/.bench-deps
	$(VENV)/$(BENCH_PY)/bin/python -m gilfree bench $(BENCH_ARGS)

# The peers named by the `bench` extra, installed without reinstalling (and
# so rebuilding) gilfree itself.
$(VENV)/%/.bench-deps: pyproject.toml | $(VENV)/%/.installed
	@echo "==> installing the bench peers into $(VENV)/$*"
	@deps=$$($(VENV)/$*/bin/python -c 'import tomllib; \
	  print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))'); \
	flock $(VENV)/.lock $(VENV)/$*/bin/python -m pip install -q $$deps
	@touch $@

# ---------------------------------------------------------------- clean

# The venvs stay (they are slow to make), but their stamps go with the
# extension they describe, so the next run rebuilds it.
.PHONY: clean distclean
clean:
	rm -rf build dist src/*.egg-info src/gilfree/include .pytest_cache
	rm -f $(wildcard $(VENV)/*/.installed)
	find src tests benchmarks -name '*.so' -delete 2>/dev/null || true
	find src tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV)
