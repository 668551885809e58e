#!/usr/bin/env bash
# Builds and runs every firmware test of dragon-channels-core under QEMU:
#   - the pool/channel battery on thumbv7em-none-eabihf (mps2-an386, Cortex-M4F), on
#     thumbv6m-none-eabi (micro:bit, Cortex-M0, portable-atomic + single-core critical section)
#     and on thumbv8m.main-none-eabihf (mps2-an521, core 0 of two Cortex-M33);
#   - negative controls: a failing check plus a HardFault, and a panic, must fail the run;
#   - the battery again logging through defmt, decoded with defmt-print;
#   - one region layout across word sizes, both directions: firmware-built images attached by
#     the 64-bit host-check program (and compared byte for byte with a host-built one), and a
#     host-built image attached by the firmware, on both Cortex-M targets;
#   - a producer on one Cortex-M33 and a consumer on the other (mps2-an521, shared SRAM).
# Needs qemu-system-arm and the three thumb targets; installs defmt-print if it is missing.
# Every QEMU run is bounded by `timeout 60`; any failure, fault or hang fails the script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

summaries=()

# run_fw LABEL MACHINE ELF [EXPECTED_STATUS [EXPECTED_SUMMARY]]
# Runs ELF on MACHINE with $tmp as QEMU's working directory (semihosting files land there),
# prints its output, and checks the exit status and the final `N passed, N failed` line.
run_fw() {
    local label=$1 machine=$2 elf=$3 want_status=${4:-0} want_summary=${5:-}
    local log="$tmp/$label.log" status=0
    echo "--- $label ($machine)"
    (cd "$tmp" && timeout 60 qemu-system-arm -machine "$machine" -nographic \
        -semihosting-config enable=on,target=native -kernel "$elf" </dev/null) >"$log" 2>&1 ||
        status=$?
    if [[ -n $want_summary ]]; then
        # A negative control: keep its (expected) failure count out of the CI log's tally.
        sed -E 's/^([0-9]+) passed, ([0-9]+) failed$/\1 pass, \2 fail/; s/^/  [expected] /' "$log"
    else
        cat "$log"
    fi
    check_summary "$label" "$log" "$status" "$want_status" "$want_summary"
}

# check_summary LABEL LOG STATUS WANT_STATUS [WANT_SUMMARY]
check_summary() {
    local label=$1 log=$2 status=$3 want_status=$4 want_summary=${5:-}
    local summary
    summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)"
    if [[ $status -eq 124 ]]; then
        echo "ERROR: $label hung (killed after 60 s)"
        exit 1
    fi
    if [[ $status -ne $want_status ]]; then
        echo "ERROR: $label exited with status $status, expected $want_status"
        exit 1
    fi
    if [[ -z $summary ]]; then
        echo "ERROR: $label printed no 'N passed, N failed' line"
        exit 1
    fi
    if [[ -n $want_summary ]]; then
        if [[ $summary != "$want_summary" ]]; then
            echo "ERROR: $label printed '$summary', expected '$want_summary'"
            exit 1
        fi
    elif ! [[ $summary =~ ^[1-9][0-9]*\ passed,\ 0\ failed$ ]]; then
        echo "ERROR: $label: $summary"
        exit 1
    fi
    if [[ -n $want_summary ]]; then
        summaries+=("$label: negative control failed as it must (exit status $status)")
    else
        summaries+=("$label: $summary")
    fi
}

# run_host LABEL ARGS...: runs host-check with ARGS and checks its summary.
run_host() {
    local label=$1 status=0
    shift
    echo "--- $label"
    "$host_check" "$@" >"$tmp/$label.log" 2>&1 || status=$?
    cat "$tmp/$label.log"
    check_summary "$label" "$tmp/$label.log" "$status" 0
}

# expect_line LABEL TEXT: the last run's log contains TEXT.
expect_line() {
    if ! grep -qF -- "$2" "$tmp/$1.log"; then
        echo "ERROR: $1: expected output containing '$2'"
        exit 1
    fi
}

if ! command -v defmt-print >/dev/null 2>&1; then
    echo "--- installing defmt-print"
    cargo install defmt-print --locked
fi

v7=thumbv7em-none-eabihf
v6=thumbv6m-none-eabi
v8=thumbv8m.main-none-eabihf

echo "--- build"
cargo build --quiet --bins --target "$v7"
cargo build --quiet --bins --target "$v6"
cargo build --quiet --features defmt-log --bin defmt_battery --target "$v7"
cargo build --quiet --bins --features an521 --target "$v8"
(cd host-check && cargo build --quiet)
# Artifact folders (CARGO_TARGET_DIR, if set, moves them).
target_dir() {
    cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}
fw_target="$(target_dir)"
host_check="$(cd host-check && target_dir)/$(rustc -vV | sed -n 's/^host: //p')/debug/dragon-channels-host-check"
fw() { echo "$fw_target/$1/debug/$2"; }

# The battery on the three targets (on mps2-an521 only core 0 runs).
run_fw battery-m4f mps2-an386 "$(fw $v7 battery)"
run_fw battery-m0 microbit "$(fw $v6 battery)"
run_fw battery-m33 mps2-an521 "$(fw $v8 battery)"

# Negative controls: the harness must turn failures, faults and panics into a failed run.
run_fw harness-fault mps2-an386 "$(fw $v7 harness_fault)" 1 "1 passed, 2 failed"
expect_line harness-fault "HARDFAULT: pc="
expect_line harness-fault "FAIL src/bin/harness_fault.rs"
run_fw harness-panic mps2-an386 "$(fw $v7 harness_panic)" 1 "1 passed, 1 failed"
expect_line harness-panic "PANIC: panicked at"

# defmt: the frames are only readable through defmt-print.
echo "--- defmt-battery (mps2-an386, decoded by defmt-print)"
elf="$(fw $v7 defmt_battery)"
status=0
(cd "$tmp" && timeout 60 qemu-system-arm -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" </dev/null |
    defmt-print -e "$elf") >"$tmp/defmt-battery.log" 2>&1 || status=$?
cat "$tmp/defmt-battery.log"
check_summary defmt-battery "$tmp/defmt-battery.log" "$status" 0
for text in "duplicate uid: UidInUse(77)" "empty: Err(Empty)" "double free: Err(Stale)" \
    "after destroy: Err(Destroyed)" "received: Received { len: 5, hints: 11, clientid: 22 }" \
    "stats: PoolStats { total:" "attrs: ChannelAttrs { capacity: 3, block_size: 40 }"; do
    expect_line defmt-battery "$text"
done

# One layout across word sizes.
# host to host through files first: separates a host-side bug from a layout difference.
run_host host-self self "$tmp"
# The 64-bit host builds the image the firmware attaches to.
run_host host-make make "$tmp"
run_fw image-in-m4f mps2-an386 "$(fw $v7 image_in)"
run_fw image-in-m0 microbit "$(fw $v6 image_in)"
for t in m4f:mps2-an386:$v7 m0:microbit:$v6; do
    IFS=: read -r name machine target <<<"$t"
    rm -f "$tmp/fw2host.img" "$tmp/fw2host.desc"
    run_fw "image-out-$name" "$machine" "$(fw "$target" image_out)"
    # The 64-bit host attaches to the image the firmware wrote.
    run_host "host-check-$name" check "$tmp"
done

# Two Cortex-M33 cores over shared SRAM.
run_fw dual-core-m33 mps2-an521 "$(fw $v8 dual_core)"

echo "--- summary"
printf '%s\n' "${summaries[@]}"
echo "all ${#summaries[@]} firmware and host runs passed"
