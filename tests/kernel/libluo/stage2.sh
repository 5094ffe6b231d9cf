# In the new kernel: retrieve what stage 1 preserved, with libluo, and
# compare every byte.
. /lab/lib.sh
for c in stage2_retrieve_and_compare stage2_finish_without_retrieving stage2_batch_retrieve; do
	lab_tap kernel-libluo kernel-libluo "$c"
done
exit 0
