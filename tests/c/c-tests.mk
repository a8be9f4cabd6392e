# tests/c/c-tests.mk - build and run the C runtime's tests.
#
# Included by the top-level Makefile; also works on its own.  Either way,
# run make from the repository root:
#
#     make -f tests/c/c-tests.mk test-c test-c-asan test-c-tsan
#
#   test-c        -O2 -g                                   build/c/release/
#   test-c-asan   AddressSanitizer + UndefinedBehaviorSanitizer  build/c/asan/
#   test-c-tsan   ThreadSanitizer                          build/c/tsan/
#   clean-c       remove build/c/
#
# Every src/runtime/*.c and tests/c/test_*.c is compiled (wildcards: a new
# source file needs no edit here); tests are declared in tests/c/test_list.h.
# Variables: CC; CFLAGS_EXTRA is added to every compile and link.
# Environment: GF_STRESS_SCALE sizes the stress tests (default 1, and 0.25
# for TSan, which is 5-15x slower); GF_TEST_TIMEOUT_SCALE stretches the
# 60 s per-test timeout (default 3 for ASan, 5 for TSan).  `runner NAME`
# runs one test in-process, `runner 'PREFIX*'` a group (tests/c/runner.c).

GFC_MAKEFILE := $(lastword $(MAKEFILE_LIST))
GFC_SAVED_DEFAULT_GOAL := $(.DEFAULT_GOAL)

GFC_SRCS := $(wildcard src/runtime/*.c) tests/c/runner.c \
            $(wildcard tests/c/test_*.c)
GFC_VARIANTS := release asan tsan

GFC_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread \
              -Isrc/runtime -Itests/c
GFC_CFLAGS_release := -O2 -g
GFC_CFLAGS_asan := -O1 -g -fsanitize=address,undefined \
                   -fno-sanitize-recover=all -fno-omit-frame-pointer
GFC_CFLAGS_tsan := -O1 -g -fsanitize=thread

# How each variant runs.  halt_on_error / -fno-sanitize-recover make the
# first report kill the test process, so the runner marks it FAIL.
GFC_RUN_release :=
GFC_RUN_asan := ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                GF_TEST_TIMEOUT_SCALE=$${GF_TEST_TIMEOUT_SCALE:-3}
GFC_RUN_tsan := TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $(if $(wildcard tests/c/tsan.supp),suppressions=tests/c/tsan.supp)" \
                GF_STRESS_SCALE=$${GF_STRESS_SCALE:-0.25} \
                GF_TEST_TIMEOUT_SCALE=$${GF_TEST_TIMEOUT_SCALE:-5}

.PHONY: test-c test-c-asan test-c-tsan clean-c
test-c: build/c/release/runner
	$(GFC_RUN_release) $<
test-c-asan: build/c/asan/runner
	$(GFC_RUN_asan) $<
test-c-tsan: build/c/tsan/runner
	$(GFC_RUN_tsan) $<
clean-c:
	rm -rf build/c

# Per variant: objects mirror the source tree under build/c/<variant>/;
# a flags file makes a change of CC or flags rebuild everything.
define GFC_VARIANT_RULES
GFC_OBJS_$(1) := $$(patsubst %.c,build/c/$(1)/%.o,$$(GFC_SRCS))
GFC_FLAGS_$(1) := $$(CC) $$(GFC_CFLAGS) $$(GFC_CFLAGS_$(1)) $$(CFLAGS_EXTRA)

build/c/$(1)/flags: FORCE
	@mkdir -p $$(@D)
	@echo '$$(GFC_FLAGS_$(1))' | cmp -s - $$@ || echo '$$(GFC_FLAGS_$(1))' > $$@

build/c/$(1)/%.o: %.c build/c/$(1)/flags
	@mkdir -p $$(@D)
	$$(GFC_FLAGS_$(1)) -MMD -MP -c $$< -o $$@

build/c/$(1)/runner: $$(GFC_OBJS_$(1))
	$$(GFC_FLAGS_$(1)) $$^ -o $$@

-include $$(GFC_OBJS_$(1):.o=.d)
endef
$(foreach v,$(GFC_VARIANTS),$(eval $(call GFC_VARIANT_RULES,$(v))))

.PHONY: FORCE
FORCE:

# Do not steal the including Makefile's default goal; alone, default to
# test-c.
ifeq ($(firstword $(MAKEFILE_LIST)),$(GFC_MAKEFILE))
.DEFAULT_GOAL := test-c
else
.DEFAULT_GOAL := $(GFC_SAVED_DEFAULT_GOAL)
endif
