# load.sh - for each line "NAME FILE QEMU-ARGV..." of /mnt/jobs: start that QEMU paused
# with -incoming "exec:cat /mnt/FILE", wait for the load to end, `cont`, and record the
# VM status and the ticks the guest prints next.
host_facts
while read -r name file qemu; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2086
    l2_start "$name" $qemu -S -incoming "exec:cat /mnt/$file"
    pid=$L2_PID
    incoming "$name" "$pid" "$LOAD_SECS"
    l2_stop "$name" "$pid"
done < /mnt/jobs
