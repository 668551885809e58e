#!/usr/bin/env bash
# Remote-channel tests over MPI: every rank is a node (std-adapter/gateway/node-sim.sh: private /dev/shm,
# own host id), its gateway (dragon-gateway --transport mpi) starts the node's client, which
# is the `remote` test binary running one scenario for its rank (the same scenarios
# `cargo test` runs over TCP). OpenMPI as root on one machine: --allow-run-as-root,
# --oversubscribe, --bind-to none, and --mca btl self,tcp (vader keeps its segments in
# /dev/shm, which the ranks no longer share). Every mpirun has a --timeout.
# Usage: std-adapter/gateway/run-mpi-tests.sh [MESSAGES_PER_SENDER]   (default 25000: 4 senders = 100,000)
set -euo pipefail
cd "$(dirname "$0")/../.."
per=${1:-25000}
cargo build -q --release -p dragon-channels-gateway --features mpi --bin dragon-gateway
testbin=$(cargo test -q --release -p dragon-channels-gateway --features mpi --test remote --no-run \
    --message-format=json | sed -n 's/.*"executable":"\([^"]*remote-[^"]*\)".*/\1/p' | tail -1)
[ -x "$testbin" ] || { echo "remote test binary not found" >&2; exit 1; }
gw=target/release/dragon-gateway
failed=0

# run SCENARIO NODES [EXPECT]: EXPECT "ok" (mpirun succeeds) or "killed" (a rank dies).
run() {
    local scenario=$1 n=$2 expect=${3:-ok}
    local dir
    dir=$(mktemp -d /tmp/dcmpi.XXXXXX)
    local t0=$SECONDS rc=0
    mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 300 \
        --mca btl self,tcp -n "$n" \
        -x DC_TEST_ROLE=client -x DC_DIR="$dir" -x DC_PREFIX=mt -x DC_MSGS="$per" \
        std-adapter/gateway/node-sim.sh "$gw" --transport mpi -- \
        "$testbin" "$scenario" --exact --nocapture --test-threads=1 >"$dir/log" 2>&1 || rc=$?
    local verdict=FAIL
    if [ "$expect" = ok ] && [ $rc -eq 0 ]; then verdict=ok; fi
    if [ "$expect" = killed ]; then
        # mpirun reports the dead rank; the surviving clients report through files.
        for _ in $(seq 1 300); do [ -f "$dir/client-done" ] && break; sleep 0.1; done
        if [ $rc -ne 0 ] && [ "$(cat "$dir/client-done" 2>/dev/null)" = ok ]; then verdict=ok; fi
    fi
    printf '%-28s %d nodes  %-4s (%ds, mpirun rc %d)\n' "$scenario" "$n" "$verdict" \
        $((SECONDS - t0)) $rc
    if [ $verdict != ok ]; then
        failed=1
        tail -40 "$dir/log" >&2
    fi
    rm -rf "$dir"
}

run send_recv_both_ways 2
run timeouts_try_once_and_poll 2
run large_payload_64mib 2
run send_recv_four_nodes 4
run four_senders_one_sink 5
run gateway_killed 2 killed
exit $failed
