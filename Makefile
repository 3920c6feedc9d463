# bldr's verbs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
# bldr is built as a static, non-PIE executable where the host's libc allows it (glibc):
# every run execs it twice (bldr, then its sandbox), and a static binary starts in about
# half the time, with no dynamic loader and no relocations (docs/benchmarks.md). Target
# rustflags reach proc-macros too unless --target is given, hence the explicit target;
# the output lands in target/HOST/release.
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
ifneq (,$(findstring -linux-gnu,$(HOST)))
export CARGO_TARGET_$(shell echo '$(HOST)' | tr 'a-z-' 'A-Z_')_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static
endif
TARGET := --target $(HOST)
BIN := target/$(HOST)/release/bldr
export BLDR := $(CURDIR)/$(BIN)
DEMO_ROOT := .demo/root
# Debian packages the targets need; installed on first use.
TEST_PKGS := busybox-static debootstrap
BENCH_PKGS := busybox-static bubblewrap systemd-container hyperfine debootstrap

.PHONY: help build install test lint demo bench deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build the release binary (target/HOST/release/bldr, static on glibc)
	$(CARGO) build --release $(TARGET)

PREFIX ?= /usr/local
install: build ## put bldr in $(PREFIX)/bin (/usr/local/bin), where the docs expect it
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/bldr

deps: ## install the Debian packages the tests need (as root)
	@scripts/ensure-packages.sh $(TEST_PKGS)

test: deps ## run every test: unit, CLI and (as root) namespace tests
	$(CARGO) test --all-targets $(TARGET)

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(TARGET) -- -D warnings

demo: deps build ## make a busybox root and run the demo build, then show the host saw no mount
	@scripts/demo.sh

bench: build ## compare bldr with bwrap, systemd-nspawn and a chroot script (docs/benchmarks.md)
	@scripts/ensure-packages.sh $(BENCH_PKGS)
	@scripts/bench.sh

clean: ## remove build output and the demo root
	$(CARGO) clean
	rm -rf --one-file-system .demo
