#!/usr/bin/env bash
# Single-node Slurm (Debian 12, slurm 22.05) on 127.0.0.1 for the Dask/resources tests.
# Idempotent: installs the packages once, starts munge/slurmctld/slurmd only when they are
# not answering, and writes the config to /etc/slurm/slurm.conf (Slurm's default path, so
# sbatch/srun/dask-jobqueue find it without SLURM_CONF). Needs root and no systemd.
# SLURM_CPUS (default 8) declares more slots than cores so several small jobs fit at once.
set -euo pipefail
SLURM_DIR=${SLURM_DIR:-/var/lib/rhapsody-slurm}
CONF=/etc/slurm/slurm.conf
CTLD_PORT=${CTLD_PORT:-6917}
SLURMD_PORT=${SLURMD_PORT:-6918}

if [ "$(id -u)" != 0 ]; then
  echo "20-slurm: not root; skipping (Slurm tests will skip)"; exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

ready() {
  timeout 5 scontrol ping 2>/dev/null | grep -q UP || return 1
  st=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  case "$st" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

HOST=$(hostname -s)
CPUS=${SLURM_CPUS:-8}
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$SLURM_DIR"/{state,spool,log} /etc/slurm

# --- munge --------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# --- slurm.conf (rewritten only when it changes) --------------------------------------
NEW_CONF=$(cat <<CONF
# written by rhapsody_lab .ci/setup.d/20-slurm.sh
ClusterName=localci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${SLURM_DIR}/state
SlurmdSpoolDir=${SLURM_DIR}/spool
SlurmctldPidFile=${SLURM_DIR}/slurmctld.pid
SlurmdPidFile=${SLURM_DIR}/slurmd.pid
SlurmctldLogFile=${SLURM_DIR}/log/slurmctld.log
SlurmdLogFile=${SLURM_DIR}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
SlurmdParameters=config_overrides
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" > "$CONF"
  changed=1
fi
unset SLURM_CONF

if [ "$changed" = 0 ] && ready; then
  echo "20-slurm: already running"; sinfo; exit 0
fi

# --- (re)start the daemons ----------------------------------------------------------
for d in slurmd slurmctld; do
  pidf="$SLURM_DIR/$d.pid"
  if [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    kill "$(cat "$pidf")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.1; done
  fi
done
slurmctld -f "$CONF"
slurmd -f "$CONF"
for _ in $(seq 1 60); do
  ready && break
  sleep 1
done
if ! ready; then
  # a node left DOWN by an earlier run comes back on request
  scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
  sleep 2
fi
sinfo
ready || { echo "20-slurm: Slurm did not become ready; see $SLURM_DIR/log" >&2; exit 1; }
echo "20-slurm: ready (config $CONF)"
