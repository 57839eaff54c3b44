# Common definitions for the scripts under scripts/qemu-boot/. Sourced, not run.

LFF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LFF_CACHE=${LFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-file-fmt}
LFF_KCONFIG=${LFF_KCONFIG:-$LFF_ROOT/scripts/qemu-boot/kernel.config}
export PATH="$HOME/.cargo/bin:$PATH"

lff_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
lff_die() { echo "error: $*" >&2; exit 1; }

# The test kernels the project supports, selected by KVER (make KVER=7.3,
# or KVER in the environment). Each is a Debian linux-source package built
# with the clang its tree asks for (7.3's scripts/min-tool-version.sh wants
# LLVM >= 17.0.1, so bookworm's clang-19; 6.12 keeps bookworm's clang 14):
#   LFF_KSRC_PKG      the source package (dpkg-installed for 6.12; fetched
#                     by scripts/deps into the cache for the others)
#   LFF_LLVM          the LLVM= value for the kernel and module builds
#   LFF_LIBCLANG_DIR  the libclang bindgen loads: that clang's own (bindgen
#                     otherwise takes the newest installed, and libclang 19
#                     rejects the flags 6.12 gives clang 14)
#   LFF_KCONFIG_RENAMES  OLD=NEW pairs applied to the config fragment(s):
#                     Kconfig symbols renamed since 6.12; OLD= (no NEW)
#                     drops a symbol that became part of another
LFF_KVERS="6.12 7.3"
LFF_KVER_DEFAULT=6.12
KVER=${KVER:-$LFF_KVER_DEFAULT}
case $KVER in
6.12)
	LFF_KSRC_PKG=linux-source-6.12
	LFF_KSRC_TARBALL=${LFF_KSRC_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
	LFF_LLVM=1 LFF_KCONFIG_RENAMES=
	# bookworm's clang is 14; before `make deps` has installed it, say so.
	LFF_LIBCLANG_DIR=/usr/lib/llvm-$( (clang -dumpversion 2>/dev/null || echo 14) | cut -d. -f1)/lib
	;;
7.3)
	LFF_KSRC_PKG=linux-source-7.3
	LFF_KSRC_SUITE=trixie-backports
	LFF_KSRC_TARBALL=${LFF_KSRC_TARBALL:-$LFF_CACHE/src/linux-source-7.3.tar.xz}
	LFF_LLVM=-19 LFF_LIBCLANG_DIR=/usr/lib/llvm-19/lib
	# NFS_V4_1: NFSv4.1 is no longer optional once NFS_V4 is set.
	LFF_KCONFIG_RENAMES="PROC_SYSCTL=SYSCTL NFS_V4_1="
	;;
*)
	lff_die "KVER=$KVER is not a supported kernel; supported: ${LFF_KVERS// /, } (default $LFF_KVER_DEFAULT)"
	;;
esac
export KVER
[ ! -d "$LFF_LIBCLANG_DIR" ] || export LIBCLANG_PATH=$LFF_LIBCLANG_DIR

# The version of the selected kernel's source package ("" if not there).
lff_ksrc_version() {
	if [ "$KVER" = 6.12 ]; then
		dpkg-query -W -f='${Version}' "$LFF_KSRC_PKG" 2>/dev/null || true
	else
		cat "$LFF_KSRC_TARBALL.version" 2>/dev/null || true
	fi
}

# The config fragment(s) as this kernel reads them (renames applied).
lff_kconfig_text() {
	local f r
	for f in "$LFF_KCONFIG" ${LFF_KCONFIG_EXTRA:+"$LFF_KCONFIG_EXTRA"}; do
		if [ -z "$LFF_KCONFIG_RENAMES" ]; then
			cat "$f"
			continue
		fi
		local sed_args=()
		for r in $LFF_KCONFIG_RENAMES; do
			if [ -z "${r#*=}" ]; then
				sed_args+=(-e "/^CONFIG_${r%%=*}=/d" -e "/^# CONFIG_${r%%=*} is not set/d")
			else
				sed_args+=(-e "s/^CONFIG_${r%%=*}=/CONFIG_${r#*=}=/" -e "s/^# CONFIG_${r%%=*} is not set/# CONFIG_${r#*=} is not set/")
			fi
		done
		sed "${sed_args[@]}" "$f"
	done
}

# The kernel build is cached outside the repository, keyed by everything
# that went into it: the source package version, the config fragment(s),
# and the versions of rustc, bindgen and clang.
# (For 6.12 the key's input is what it was before KVER existed, so the
# cached 6.12 kernels stay valid; the other kernels add their KVER.)
lff_kernel_key() {
	{
		if [ "$KVER" = 6.12 ]; then
			dpkg-query -W -f='${Version}\n' linux-source-6.12 2>/dev/null || stat -c %s "$LFF_KSRC_TARBALL"
		else
			echo "KVER=$KVER $(lff_ksrc_version) LLVM=$LFF_LLVM"
		fi
		lff_kconfig_text
		rustc --version
		bindgen --version 2>/dev/null
		clang$(lff_llvm_suffix) --version | head -1
	} | sha256sum | cut -c1-16
}

lff_kernel_dir() {
	local ver
	ver=$(lff_ksrc_version | cut -d- -f1)
	echo "$LFF_CACHE/kernel-${ver:-unknown}${LFF_KERNEL_VARIANT:+-$LFF_KERNEL_VARIANT}-$(lff_kernel_key)"
}

# The clang suffix of LFF_LLVM ("" for LLVM=1, "-19" for LLVM=-19).
lff_llvm_suffix() {
	case $LFF_LLVM in 1) echo ;; *) echo "$LFF_LLVM" ;; esac
}

# The LLVM= value a kernel tree was built with, from the clang version in
# its .config: "1" when that is the default clang, "-N" when clang-N is
# installed (modules must be built with the kernel's own compiler).
lff_kdir_llvm() {
	local kdir=$1 v major
	v=$(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$kdir/.config" 2>/dev/null)
	major=$(( ${v:-0} / 10000 ))
	if [ "$major" = 0 ] || [ "$(clang -dumpversion 2>/dev/null | cut -d. -f1)" = "$major" ]; then
		echo 1
	elif command -v "clang-$major" >/dev/null; then
		echo "-$major"
	else
		echo 1
	fi
}

# The supported kernel that KVER is not (the second kernel `make test`
# runs a subset of the suites on).
lff_other_kver() {
	local v
	for v in $LFF_KVERS; do [ "$v" = "$KVER" ] || { echo "$v"; return; }; done
}

# lff_tree_copy NAME: a copy of the work tree's sources in the cache
# (~/.cache/loop-file-fmt/NAME-tree-<hash of the work tree's path>), for
# building the modules against another kernel: Kbuild builds external
# modules inside their source tree, and the work tree's own .ko files stay
# as they are. Build products in the copy are kept for incremental builds;
# target/release/losetup-fmt is the work tree's (it does not depend on the
# kernel). Prints the copy's path.
lff_tree_copy() {
	local tree
	tree=$LFF_CACHE/$1-tree-$(echo "$LFF_ROOT" | sha256sum | cut -c1-12)
	mkdir -p "$tree/target/release"
	rsync -a --delete --exclude=/.git --exclude=/target/ --filter=':- .gitignore' "$LFF_ROOT/" "$tree/"
	ln -sfn "$LFF_ROOT/target/release/losetup-fmt" "$tree/target/release/losetup-fmt"
	echo "$tree"
}
