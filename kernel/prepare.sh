# Sourced by tools/test.sh: makes sure a LUO kernel is built and cached for
# the kernel suites (tests/kernel) before the meson tests run. When that is
# impossible or fails, exports LUO_KERNEL_SKIP with the reason, which those
# suites report as their skip reason; the rest of the tests run as usual.
# LUO_KERNEL=0 turns the kernel suites off.
luo_kernel_prepare() {
	local lab why=""
	lab="$(dirname "${BASH_SOURCE[0]}")/lab.sh"
	if [ "${LUO_KERNEL:-1}" = 0 ]; then
		echo "== kernel suites off (LUO_KERNEL=0)"
		return 0
	fi
	[ "$(uname -m)" = x86_64 ] || why="the host is not x86_64"
	[ "$(id -u)" = 0 ] || why="not root"
	command -v apt-get >/dev/null || why="no apt-get (not Debian)"
	if [ -n "$why" ]; then
		export LUO_KERNEL_SKIP="no LUO kernel can be built here: $why"
		echo "== kernel suites will skip: $why"
		return 0
	fi
	echo "== kernel: $lab deps && $lab build (the first build takes 10-20 min; then cached)"
	if "$lab" deps && "$lab" build >/dev/null; then
		return 0
	fi
	export LUO_KERNEL_SKIP="kernel/lab.sh could not build a LUO kernel (see its output before the tests)"
	echo "== kernel suites will skip: the kernel build failed"
}
