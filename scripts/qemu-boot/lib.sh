# Common definitions for the scripts under scripts/qemu-boot/. Sourced, not run.

LFF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LFF_CACHE=${LFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-file-fmt}
LFF_KSRC_TARBALL=${LFF_KSRC_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
LFF_KCONFIG=${LFF_KCONFIG:-$LFF_ROOT/scripts/qemu-boot/kernel.config}
export PATH="$HOME/.cargo/bin:$PATH"

lff_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
lff_die() { echo "error: $*" >&2; exit 1; }

# The kernel build is cached outside the repository, keyed by everything
# that went into it: the source package version, the config fragment(s),
# and the versions of rustc, bindgen and clang.
lff_kernel_key() {
	{
		dpkg-query -W -f='${Version}\n' linux-source-6.12 2>/dev/null || stat -c %s "$LFF_KSRC_TARBALL"
		cat "$LFF_KCONFIG"
		[ -z "${LFF_KCONFIG_EXTRA:-}" ] || cat "$LFF_KCONFIG_EXTRA"
		rustc --version
		bindgen --version 2>/dev/null
		clang --version | head -1
	} | sha256sum | cut -c1-16
}

lff_kernel_dir() {
	local ver
	ver=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null | cut -d- -f1)
	echo "$LFF_CACHE/kernel-${ver:-unknown}${LFF_KERNEL_VARIANT:+-$LFF_KERNEL_VARIANT}-$(lff_kernel_key)"
}
