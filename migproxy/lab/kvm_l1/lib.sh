# lib.sh - helpers for the L1 scripts of the nested KVM lab (busybox sh inside L1).
# The harness (migproxy/lab/kvm.py) writes /mnt/run.sh as: its parameters (shell
# assignments), this file, then one task script (save.sh, load.sh, migrate-src.sh or
# migrate-dst.sh).  /init runs it with /mnt as the host's 9p share and powers off after.
# Every wait has a cap in seconds (of L1 uptime); results are files in /mnt that the harness
# reads: NAME.result (key=value lines), NAME.serial, NAME.err (QEMU's stderr).

POLL=0.25   # seconds between polls

up() { cut -d' ' -f1 /proc/uptime; }

# before SECONDS: true until SECONDS (whole seconds of uptime) have passed since the last
# `start_clock`; the loops below poll while it holds.
start_clock() { t=$(up); CLOCK_START=${t%.*}; }
before() { t=$(up); [ "${t%.*}" -lt $((CLOCK_START + $1)) ]; }

# hmp NAME COMMAND: run a monitor command of the L2 NAME, print its output.
hmp() {
    echo "$2" | socat -t 0.5 - "UNIX-CONNECT:/tmp/$1.mon" 2>/dev/null | tr -d '\r' \
        | grep -v -e '^(qemu)' -e '^QEMU .* monitor - type'
}

# vm_status NAME: "running", "paused (postmigrate)", ... or "" when the monitor is gone.
vm_status() { hmp "$1" "info status" | sed -n 's/^VM status: //p'; }

# migration_status NAME: the "Migration status" of `info migrate` ("" when none).
migration_status() { hmp "$1" "info migrate" | sed -n 's/^Migration status: *//p'; }

# l2_start NAME QEMU-ARGV... [-- EXTRA-ARGS]: start the tick guest under KVM in the
# background; L2_PID is its process id.  Returns once its monitor answers (or QEMU died).
l2_start() {
    local name=$1
    shift
    rm -f "/tmp/$name.serial" "/tmp/$name.mon"
    "$@" -M virt-7.2,gic-version=3 -accel kvm -cpu host -m 64M -smp 1 \
        -nographic -nodefaults -no-user-config \
        -serial "file:/tmp/$name.serial" -kernel /tick.bin \
        -monitor "unix:/tmp/$name.mon,server=on,wait=off" > "/tmp/$name.err" 2>&1 &
    L2_PID=$!
    result "$name" started "$(up)"
    # Commands sent before the monitor socket exists would be lost.
    start_clock
    while alive "$L2_PID" && [ -z "$(vm_status "$name")" ] && before 30; do sleep "$POLL"; done
}

# alive PID: the process runs (a zombie does not: the waits run in command substitutions,
# whose subshell cannot reap the L2 of its parent shell).
alive() {
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}

# wait_file PATH SECONDS: wait until PATH exists; false when it did not appear.
wait_file() {
    start_clock
    while [ ! -e "$1" ] && before "$2"; do sleep "$POLL"; done
    [ -e "$1" ]
}

# wait_tick NAME PID N SECONDS: wait until the guest printed "tick N" (false if not).
wait_tick() {
    start_clock
    while before "$4"; do
        grep -q "^tick $3" "/tmp/$1.serial" 2>/dev/null && return 0
        alive "$2" || return 1
        sleep "$POLL"
    done
    return 1
}

# tick_count NAME: how many complete tick lines the serial log has.
tick_count() {
    local n
    n=$(grep -c '^tick [0-9]' "/tmp/$1.serial" 2>/dev/null)
    echo "${n:-0}"
}

# wait_more_ticks NAME PID COUNT SECONDS: wait until the log has COUNT more tick lines
# than now (false if not, e.g. the guest is paused or QEMU died).
wait_more_ticks() {
    local want=$(($(tick_count "$1") + $3))
    start_clock
    while before "$4"; do
        [ "$(tick_count "$1")" -ge "$want" ] && return 0
        alive "$2" || return 1
        sleep "$POLL"
    done
    return 1
}

# wait_migration NAME SECONDS: poll `info migrate` until a final state (or postcopy-paused:
# a postcopy that lost its destination waits there for a recovery); print it ("timeout
# (STATUS)" when the cap passed first).
wait_migration() {
    start_clock
    s=""
    while before "$2"; do
        s=$(migration_status "$1")
        case $s in completed* | failed* | cancelled* | postcopy-paused*) echo "$s"; return ;; esac
        sleep "$POLL"
    done
    echo "timeout ($s)"
}

# postcopy_caps NAME: when $POSTCOPY is 1, the postcopy-ram capability on the L2 NAME.
postcopy_caps() {
    [ "${POSTCOPY:-0}" = 1 ] && hmp "$1" "migrate_set_capability postcopy-ram on" > /dev/null
    true
}

# start_postcopy NAME SECONDS: when $POSTCOPY is 1, wait until the outgoing migration is
# active (the bandwidth is capped, so it is still in precopy) and switch it to postcopy;
# print the status it was switched in ("" when $POSTCOPY is not 1).
start_postcopy() {
    [ "${POSTCOPY:-0}" = 1 ] || return 0
    start_clock
    s=""
    while before "$2"; do
        s=$(migration_status "$1")
        case $s in active*) hmp "$1" migrate_start_postcopy > /dev/null; echo "$s"; return ;;
            completed* | failed* | cancelled*) echo "$s"; return ;; esac
        sleep "$POLL"
    done
    echo "timeout ($s)"
}

# wait_incoming NAME PID SECONDS [ABORT-FILE]: wait until the incoming migration is over
# (the VM is no longer "inmigrate") or QEMU exited; print the VM status, or "exited",
# "failed" (the load failed and QEMU stays: 10.0 with the return path does), "aborted"
# (ABORT-FILE appeared) or "timeout".
wait_incoming() {
    start_clock
    while before "$3"; do
        if [ -n "${4:-}" ] && [ -e "$4" ]; then echo aborted; return; fi
        if ! alive "$2"; then echo exited; return; fi
        s=$(vm_status "$1")
        case $s in *inmigrate* | "") ;; *) echo "$s"; return ;; esac
        case $(migration_status "$1") in failed*) echo failed; return ;; esac
        sleep "$POLL"
    done
    echo timeout
}

# incoming NAME PID SECONDS [ABORT-FILE]: wait for the incoming migration (wait_incoming)
# and record how it ended; when it loaded, `cont` and record the VM status, after waiting
# (if it runs) for $TICKS_AFTER more ticks, at most $AFTER_SECS seconds.
incoming() {
    local status
    status=$(wait_incoming "$@")
    result "$1" load_status "$status"
    result "$1" loaded_at "$(up)"
    case $status in exited | failed | timeout | aborted | "") return ;; esac
    hmp "$1" cont > /dev/null
    [ "$(vm_status "$1")" = running ] && wait_more_ticks "$1" "$2" "$TICKS_AFTER" "$AFTER_SECS"
    result "$1" status_after_cont "$(vm_status "$1")"
}

# l2_stop NAME PID: quit the L2 (kill it if the monitor does not answer), keep its files
# in /mnt.
l2_stop() {
    alive "$2" && hmp "$1" quit > /dev/null
    start_clock
    while alive "$2" && before 5; do sleep "$POLL"; done
    alive "$2" && kill -9 "$2"
    wait "$2" 2>/dev/null
    cp "/tmp/$1.serial" "/mnt/$1.serial" 2>/dev/null
    cp "/tmp/$1.err" "/mnt/$1.err" 2>/dev/null
}

# result NAME KEY VALUE: one line of /mnt/NAME.result.
result() { echo "$2=$3" >> "/mnt/$1.result"; }

# host_facts: what the harness records about this L1.
host_facts() {
    result l1 release "$(uname -r)"
    result l1 midr "$(cat /sys/devices/system/cpu/cpu0/regs/identification/midr_el1 2>/dev/null)"
    result l1 kvm "$(test -c /dev/kvm && echo yes || echo no)"
}
