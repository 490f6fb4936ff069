# save.sh - for each line "NAME QEMU-ARGV..." of /mnt/jobs: run the tick guest under KVM
# with that QEMU, wait for "tick $TICKS", stop it and save its migration stream to
# /mnt/NAME.mig with `migrate "exec:cat > FILE"`.
host_facts
while read -r name qemu; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2086
    result "$name" version_line "$($qemu --version | head -n1)"
    # shellcheck disable=SC2086
    l2_start "$name" $qemu
    pid=$L2_PID
    if wait_tick "$name" "$pid" "$TICKS" "$TICK_SECS"; then
        result "$name" ticking "$(up)"
        hmp "$name" stop > /dev/null
        cp "/tmp/$name.serial" "/mnt/$name.serial.stop"
        hmp "$name" "migrate -d \"exec:cat > /tmp/$name.mig\"" > /dev/null
        result "$name" migration "$(wait_migration "$name" "$MIGRATION_SECS")"
        result "$name" saved "$(up)"
        cp "/tmp/$name.mig" "/mnt/$name.mig" 2>/dev/null
        rm -f "/tmp/$name.mig"
    else
        result "$name" migration "no tick $TICKS"
    fi
    l2_stop "$name" "$pid"
done < /mnt/jobs
