# loop-file-fmt: top-level build.
#
#   make boot      the main job: boot Debian from a zstd-compressed qcow2 root
#                  through the loop-file-fmt initramfs (BOOT_ARGS=--shell: a shell there)
#   make netboot   PXE-boot the same root from an image store on the host
#                  (SOURCE=nfs|cifs|nbd, default nfs; NETBOOT_ARGS=...)
#   make deps      install what is missing (Debian packages, rust-src, bindgen)
#   make kernel    build the test kernel into the cache (no-op when cached)
#   make modules   build the kernel modules against KDIR (default: that kernel)
#   make tools     build losetup-fmt
#   make test      host tests, then the guest suites through vm-run
#   make test-debug  the guest suites and a stress test under a debug kernel
#                  (KASAN, UBSAN, lockdep, kmemleak; scripts/test-debug)
#   make kunit     only the KUnit suites (tests/kunit/) in one guest
#   make clippy    the modules with CLIPPY=1 and cargo clippy, warnings fatal
#   make bench     fio: our devices vs kernel loop, qemu-nbd, ublk (BENCH_ARGS=...)
#   make bench-native  the qcow2 engine vs qemu-img bench, natively on the host
#   make lab       N network-booting clients on one throttled uplink (LAB_ARGS=...)
#   make fuzz      libFuzzer targets of the qcow2 logic (FUZZ_TARGET, FUZZ_SECONDS)
#
# KVER=7.3 selects the Linux 7.3 test kernel for every target (default
# KVER=6.12; also read from the environment by the scripts).
# KDIR=/path/to/linux builds the modules against your own Rust-enabled
# kernel tree (configured and built with LLVM; the clang it was built with
# is found from its .config, or pass LLVM=-N).

SHELL := /bin/bash
ROOT := $(CURDIR)
KERNEL_SCRIPT := $(ROOT)/scripts/qemu-boot/build-kernel
# Warnings from rustc, clippy and the C compiler fail the build.
WERROR ?= 1

SUPPORTED_KVERS := 6.12 7.3
ifeq ($(KVER),)
KVER := 6.12
endif
ifeq ($(filter $(KVER),$(SUPPORTED_KVERS)),)
$(error KVER=$(KVER) is not a supported kernel; supported: $(SUPPORTED_KVERS) (default 6.12))
endif
export KVER

ifeq ($(KDIR),)
KDIR_DEFAULT := 1
# Recursive: a first `make KVER=7.3 modules` learns the path only after
# `kernel` has fetched the source.
KDIR = $(shell KVER=$(KVER) $(KERNEL_SCRIPT) --path)
endif
# The kernel's own clang (LLVM=1 or LLVM=-19) and that clang's libclang for
# bindgen (the Kbuild runs it with the kernel's C flags; left alone, bindgen
# loads the newest libclang installed, which may not take them).
LLVM ?= $(shell KVER=$(KVER) KDIR=$(if $(KDIR_DEFAULT),,$(KDIR)) $(KERNEL_SCRIPT) --llvm)
LIBCLANG_DIR := /usr/lib/llvm-$(shell clang$(if $(filter 1,$(LLVM)),,$(LLVM)) -dumpversion 2>/dev/null | cut -d. -f1)/lib
ifneq ($(wildcard $(LIBCLANG_DIR)),)
export LIBCLANG_PATH ?= $(LIBCLANG_DIR)
endif

KMAKE_FLAGS = LLVM=$(LLVM) M=$(ROOT)
ifeq ($(WERROR),1)
KMAKE_FLAGS += KCFLAGS=-Werror KRUSTFLAGS=-Dwarnings
endif

GEN_UAPI := drivers/block/loop_file_fmt/generated/uapi.rs
UAPI_H := include/uapi/linux/loop_file_fmt.h

.PHONY: all bench bench-native lab fuzz boot netboot deps kernel modules tools test test-host test-guest test-debug kunit clippy clippy-modules fmt clean install

all: modules tools

deps:
	@scripts/deps

kernel: deps
ifeq ($(KDIR_DEFAULT),1)
	@$(KERNEL_SCRIPT) >/dev/null
endif

$(GEN_UAPI): $(UAPI_H) drivers/block/loop_file_fmt/uapi_numbers.h
	@mkdir -p $(dir $@)
	@PATH="$$HOME/.cargo/bin:$$PATH" bindgen drivers/block/loop_file_fmt/uapi_numbers.h \
		--use-core --no-doc-comments --no-prepend-enum-name \
		--default-enum-style consts \
		--allowlist-type 'lff_.*' --allowlist-var 'LFF_.*' \
		-o $@ -- -Iinclude

# Objects built against one kernel tree are not all rebuilt when KDIR
# names another (seen: modules for a tree with a different config read
# backing file sizes wrong), so a change of tree cleans first.
define same_tree
	@k=$$(realpath $(KDIR)); \
	if [ -f .lff-kdir ] && [ "$$(cat .lff-kdir)" != "$$k" ]; then \
		echo "modules: last built against $$(cat .lff-kdir); cleaning for $$k"; \
		$(MAKE) -s -C $(KDIR) M=$(ROOT) LLVM=$(LLVM) clean; \
	fi; \
	echo "$$k" >.lff-kdir
endef

modules: kernel $(GEN_UAPI)
	$(same_tree)
	@PATH="$$HOME/.cargo/bin:$$PATH" $(MAKE) -s -C $(KDIR) $(KMAKE_FLAGS) modules

tools: deps
	@cargo build --release --quiet -p losetup-fmt

clippy: clippy-modules
	@cargo clippy --quiet --all-targets -- -D warnings

# The kernel side alone: the modules built by clippy-driver, warnings fatal
# (what run-tests checks against the second kernel).
clippy-modules: kernel $(GEN_UAPI)
	$(same_tree)
	@PATH="$$HOME/.cargo/bin:$$PATH" $(MAKE) -s -C $(KDIR) $(KMAKE_FLAGS) CLIPPY=1 modules

# losetup-fmt, its man page, and the modules if built for the running
# kernel (scripts/install; DESTDIR=DIR stages under DIR).
install: tools
	@scripts/install $(if $(DESTDIR),--prefix $(DESTDIR))

fmt:
	@rustfmt --config-path $(KDIR)/.rustfmt.toml $$(find drivers tests -name '*.rs' -not -path '*/generated/*')
	@cargo fmt

boot: deps
	@scripts/qemu-boot/boot $(if $(filter 1,$(BUILTIN)),--builtin) $(BOOT_ARGS)

SOURCE ?= nfs
netboot: deps
	@scripts/netboot/netboot --source $(SOURCE) $(NETBOOT_ARGS)

bench: deps
	@bench/run $(BENCH_ARGS)

lab: deps
	@bench/lab $(LAB_ARGS)

bench-native: deps
	@bench/native $(NATIVE_ARGS)

FUZZ_TARGET ?= all
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/fuzz $(FUZZ_TARGET) $(FUZZ_SECONDS)

test: deps
	@scripts/run-tests

test-host: deps
	@scripts/run-tests --host-only

test-guest: deps
	@scripts/run-tests --guest-only

test-debug: deps
	@scripts/test-debug

kunit: deps
	@scripts/qemu-boot/vm-run -- tests/guest/run-all kunit

clean:
	@[ ! -d "$(KDIR)" ] || $(MAKE) -s -C $(KDIR) M=$(ROOT) LLVM=$(LLVM) clean
	@rm -rf drivers/block/loop_file_fmt/generated .lff-kdir
	@cargo clean
