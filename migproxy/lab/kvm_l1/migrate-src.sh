# migrate-src.sh - the source of a live migration: run the tick guest (QEMU $QEMU), say
# /mnt/ticking after "tick $TICKS", wait for the host to write the URI into /mnt/go,
# `migrate -d URI` (with $POSTCOPY=1: postcopy-ram, the bandwidth capped and
# `migrate_start_postcopy` once active), wait for a final state, then record the VM status as it is (a source
# that stayed paused is reported, not resumed) and whether the guest goes on ticking.
host_facts
name=src
# shellcheck disable=SC2086
l2_start "$name" $QEMU
pid=$L2_PID
if wait_tick "$name" "$pid" "$TICKS" "$TICK_SECS"; then
    touch /mnt/ticking
    if wait_file /mnt/go "$GO_SECS" && [ ! -e /mnt/abort ]; then
        [ "$RETURN_PATH" = 1 ] && hmp "$name" "migrate_set_capability return-path on" > /dev/null
        postcopy_caps "$name"
        [ "${POSTCOPY:-0}" = 1 ] && hmp "$name" "migrate_set_parameter max-bandwidth 64k" > /dev/null
        result "$name" migrate_at "$(up)"
        hmp "$name" "migrate -d $(cat /mnt/go)" > /dev/null
        [ "${POSTCOPY:-0}" = 1 ] && result "$name" postcopy_from "$(start_postcopy "$name" 30)"
        result "$name" migration "$(wait_migration "$name" "$MIGRATION_SECS")"
        result "$name" migrated_at "$(up)"
        hmp "$name" "info migrate" > /mnt/src.info-migrate
        cp "/tmp/$name.serial" "/mnt/$name.serial.migrated"
        status=$(vm_status "$name")
        result "$name" vm_status "$status"
        if [ "$status" = running ] && wait_more_ticks "$name" "$pid" 2 "$AFTER_SECS"; then
            result "$name" ticks_after yes
        else
            result "$name" ticks_after no
        fi
    fi
else
    result "$name" migration "no tick $TICKS"
fi
l2_stop "$name" "$pid"
touch /mnt/done
