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

# A Dragon runtime killed earlier (a timed-out test, a crashed session) leaves processes and
# /dev/shm segments named after its launcher's pid; a new runtime that meets them can hang.
# CI starts from a clean slate: end stray Dragon processes, then drop their segments.
pat='dragon\.native|/bin/dragon |dragon-backend|dragon-localservices|dragon-globalservices|dragon-tcp|dragon-hsta'
if pgrep -f "$pat" >/dev/null 2>&1; then
  echo "40-dragon: ending stray Dragon processes: $(pgrep -f "$pat" | tr '\n' ' ')"
  pkill -9 -f "$pat" || true
  sleep 1
fi
stale=$(ls /dev/shm 2>/dev/null | grep -c '^DD' || true)
if [ "${stale:-0}" -gt 0 ]; then
  echo "40-dragon: removing $stale stale Dragon /dev/shm segments"
  rm -f /dev/shm/DD* || true
fi
