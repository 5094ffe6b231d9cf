# The project's conformance suite (tests/preload/conformance.c), built to
# talk to the kernel's /dev/liveupdate instead of the shim.
. /lab/lib.sh
lab_tap conformance kernel-conformance
exit 0
