# migrate-dst.sh - the destination of a live migration: QEMU $QEMU paused with -incoming
# defer, the return-path and postcopy-ram capabilities when asked, listening on tcp:0.0.0.0:$PORT (the host
# forwards to it); /mnt/ready says so.  Then as load.sh: wait for the load to end (or
# /mnt/abort), `cont`, record the status and the ticks.
host_facts
name=dst
# shellcheck disable=SC2086
l2_start "$name" $QEMU -S -incoming defer
pid=$L2_PID
[ "$RETURN_PATH" = 1 ] && hmp "$name" "migrate_set_capability return-path on" > /dev/null
postcopy_caps "$name"
hmp "$name" "migrate_incoming tcp:0.0.0.0:$PORT" > /dev/null
touch /mnt/ready
incoming "$name" "$pid" "$LOAD_SECS" /mnt/abort
l2_stop "$name" "$pid"
touch /mnt/done
