#!/bin/sh
# Multi-core N->N scaling of 64-byte messages: N sender and N receiver processes on one
# dragon-channels channel, beside N->N crossbeam-channel threads, for N = 1, 2, 4, 8.
# Needs only the release binary (no cargo):
#   sh scaling.sh path/to/dragon-channels-bench [total-messages-per-run]
# Build it with: cargo build --release --manifest-path examples/peers/Cargo.toml
# (binary: examples/peers/target/release/dragon-channels-bench). Each N runs at most 60 s.
set -eu
BIN=${1:?usage: scaling.sh path/to/dragon-channels-bench [total-messages]}
TOTAL=${2:-2000000}
[ -x "$BIN" ] || { echo "not executable: $BIN" >&2; exit 2; }
echo "## N->N throughput, 64-byte messages, $TOTAL messages per run ($(nproc) CPUs)"
echo
echo "| N->N | dragon-channels (processes), M msg/s | crossbeam bounded(100) (threads), M msg/s | ours/crossbeam |"
echo "|---|---|---|---|"
for N in 1 2 4 8; do
    if LINE=$(timeout 60 "$BIN" --scaling "$N" --total "$TOTAL"); then
        echo "$LINE" | awk -F '\t' '{ printf "| %d->%d | %.2f | %.2f | %.2fx |\n", $1, $1, $2/1e6, $3/1e6, $2/$3 }'
    else
        echo "| $N->$N | failed or timed out | | |"
    fi
done
# Anything a killed run left behind (this script's runs only use dcb-* names).
LEFT=$(ls /dev/shm 2>/dev/null | grep '^dcb-' || true)
[ -z "$LEFT" ] || echo "warning: left in /dev/shm: $LEFT" >&2
