#!/usr/bin/env bash
# Dragon backend tests: dragonhpc comes with the `dragon` extra (make venv); this adds Open
# MPI (Debian's mpirun) so the `type="mpi"` test runs a real MPI program (mpi4py, also in the
# extra). Idempotent. Without it the test still runs `ranks` with a non-MPI executable.
set -euo pipefail
if ! command -v mpirun >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openmpi-bin >/dev/null
  else
    echo "40-dragon: not root; no Open MPI (the MPI test falls back to plain ranks)"
  fi
fi
echo "40-dragon: mpirun=$(command -v mpirun || echo none)"
