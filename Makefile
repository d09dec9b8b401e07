# ballast: build the kernel, prepare the Xen lab, run lab scenarios.
#   make            build build/ballast, build/ballast.cfg, build/memtime and build/ballastd (dom0 tools)
#   make lab        prepare .lab/ (Debian Xen 4.17 + Linux dom0 images; cached)
#   make run        boot ballast in the lab and show its console for ~30 s
#   make test       host unit tests, lints, a bounded run of every fuzz target, then every lab scenario
#                   (tests/lab/suite.sh groups them into boots)
#   make fuzz       every fuzz target (fuzz/, cargo-fuzz on nightly) for FUZZ_SECONDS each, growing its corpus
#   make lint       cargo fmt --check, cargo clippy -D warnings on the host and the target
#   make scenario S=NAME [S="A B"]   run scenario(s) from tests/scenarios in one boot
#   make clean      remove build/ and target/ (keeps the .lab cache; make distclean drops it)
# Variables: RUNFLAGS (extra tests/lab/run.py options, e.g. RUNFLAGS=-v), CARGO.

SHELL := /bin/bash
CARGO ?= cargo
TARGET := x86_64-unknown-none
KERNEL := target/$(TARGET)/release/ballast
PYTHON ?= python3
RUNFLAGS ?=
RUN := $(PYTHON) tests/lab/run.py $(RUNFLAGS)
DEPS_STAMP := build/.deps-ok

.PHONY: all kernel lab run test unit lint fuzz fuzz-check scenario clean distclean deps build/memtime build/ballastd

all: build/ballast build/ballast.cfg build/memtime build/ballastd

deps: $(DEPS_STAMP)
$(DEPS_STAMP): tests/lab/deps.sh
	@tests/lab/deps.sh
	@mkdir -p build && touch $@

# Cargo decides whether anything changed; always ask it.
kernel: $(DEPS_STAMP)
	$(CARGO) build --release --target $(TARGET) -p ballast-boot

build/ballast: kernel
	@mkdir -p build
	@cp -p $(KERNEL) $@.tmp && mv $@.tmp $@
	@echo "built $@ ($$(stat -c %s $@) bytes)"

# memtime: the dom0 tool that times a mem-set (host target; loads the Xen libraries at run time).
# Phony for the same reason as kernel: Cargo decides whether anything changed.
build/memtime: $(DEPS_STAMP)
	$(CARGO) build --release -p ballast-memtime
	@mkdir -p build
	@cp -p target/release/memtime $@.tmp && strip --strip-debug $@.tmp && mv $@.tmp $@
	@echo "built $@ ($$(stat -c %s $@) bytes)"

# ballastd: the dom0 memory daemon, a static musl binary (the busybox dom0 has no libraries to offer it).
build/ballastd: $(DEPS_STAMP)
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p ballastd
	@mkdir -p build
	@cp -p target/x86_64-unknown-linux-musl/release/ballastd $@.tmp && strip --strip-debug $@.tmp && mv $@.tmp $@
	@echo "built $@ ($$(stat -c %s $@) bytes)"

build/ballast.cfg: Makefile
	@mkdir -p build
	@printf '%s\n' \
	  'name = "ballast"' \
	  'type = "pv"' \
	  'kernel = "/lab/ballast"' \
	  'memory = 256' \
	  'maxmem = 256' \
	  'vcpus = 1' \
	  'on_crash = "preserve"' \
	  'on_poweroff = "destroy"' \
	  'on_reboot = "restart"' \
	  'extra = ""' >$@

lab: $(DEPS_STAMP)
	@tests/lab/prepare.sh

run: all lab
	$(RUN) run

unit: $(DEPS_STAMP)
	$(CARGO) test --workspace

lint: $(DEPS_STAMP)
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt -- --check
	$(CARGO) clippy --workspace --exclude ballast-boot --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(TARGET) -p ballast-boot -- -D warnings

# Fuzzing (tests/fuzz/run.sh installs nightly and cargo-fuzz if missing). make test replays each
# committed corpus and runs FUZZ_RUNS new inputs per target; make fuzz runs each for FUZZ_SECONDS
# (TARGETS="a b" for some); tests/fuzz/run.sh count N runs exactly N per target.
FUZZ_RUNS ?= 20000
FUZZ_SECONDS ?= 60
TARGETS ?=
fuzz: $(DEPS_STAMP)
	tests/fuzz/run.sh run $(FUZZ_SECONDS) $(TARGETS)

fuzz-check: $(DEPS_STAMP)
	tests/fuzz/run.sh check $(FUZZ_RUNS)

test: unit lint fuzz-check all lab
	RUNFLAGS="$(RUNFLAGS)" tests/lab/suite.sh

scenario: all lab
	@test -n "$(S)" || { echo "usage: make scenario S=name"; exit 2; }
	$(RUN) $(S)

clean:
	rm -rf build target

distclean: clean
	rm -rf .lab

# make bench [N=3] [ONLY=mig|chan|limit|smp|daemon|pv]: ballast and the reference Linux PV guest side by side in one lab boot;
# prints a table of ratios (>1 = ballast better), writes build/bench.json and build/bench.svg.
N ?= 3
.PHONY: bench
bench: all lab
	$(RUN) --dom0-args "bench_runs=$(N)$(if $(ONLY), bench_only=$(ONLY))" tests/bench/bench.sh; rc=$$?; \
	  $(PYTHON) tests/bench/report.py && exit $$rc
