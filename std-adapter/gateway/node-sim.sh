#!/bin/sh
# One MPI rank standing for one node on a single machine (tests and benchmarks only):
# the rank runs in its own mount namespace with an empty tmpfs on /dev/shm, so its pools are
# invisible to the other ranks, and with its own host id (DRAGON_CHANNELS_HOST_ID, from the
# launcher's rank variable), so descriptors of the other ranks' pools are remote. Needs root
# (or a user namespace: `unshare -r -m`). Usage: mpirun ... node-sim.sh COMMAND ARGS...
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${SLURM_PROCID:-0}}}
exec unshare -m sh -c '
    mount -t tmpfs -o size=${NODE_SHM_SIZE:-4g} tmpfs /dev/shm || exit 97
    exec "$@"' node env DRAGON_CHANNELS_HOST_ID=$((rank + 4096)) "$@"
