#!/usr/bin/env bash
# Remote-channel benchmark beside MPI's own ping-pong between the same two ranks, and beside
# the local channel (examples/pingpong). Each rank is a node (node-sim.sh). Two MPI
# configurations: --mca btl self,tcp (the tests' setting: node to node is a network path)
# and shared-memory MPI (vader with its backing files in /tmp, which the ranks share).
# Usage: std-adapter/gateway/bench-mpi.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
cargo build -q --release -p dragon-channels-gateway --features mpi --bin dragon-gateway \
    --example mpi_pingpong --example remote_bench
cargo build -q --release -p dragon-channels-examples --example pingpong 2>/dev/null || true
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 300 -n 2)
echo "cores: $(nproc); 2 ranks, each a gateway plus a client process (4 busy processes at most)"
for cfg in "btl self,tcp" "btl self,vader btl_vader_backing_directory /tmp"; do
    set -- $cfg
    mca=()
    while [ $# -gt 0 ]; do mca+=(--mca "$1" "$2"); shift 2; done
    for run in $(seq 1 "$runs"); do
        echo "--- MPI ${cfg}, run $run"
        "${mpi[@]}" "${mca[@]}" std-adapter/gateway/node-sim.sh target/release/examples/mpi_pingpong
        dir=$(mktemp -d /tmp/dcbench.XXXXXX)
        "${mpi[@]}" "${mca[@]}" -x DC_DIR="$dir" std-adapter/gateway/node-sim.sh \
            target/release/dragon-gateway --transport mpi -- target/release/examples/remote_bench
        rm -rf "$dir"
    done
done
if [ -x target/release/examples/pingpong ]; then
    echo "--- local channel (examples/pingpong)"
    target/release/examples/pingpong
fi
