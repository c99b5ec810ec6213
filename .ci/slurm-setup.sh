#!/usr/bin/env bash
# A single-node SLURM on localhost (Debian's slurm-wlm + munge), for the real SLURM test of
# `ddbench compare --launcher slurm` (tests/test_slurm.py).
#
#   .ci/slurm-setup.sh              install slurm-wlm and munge (apt), write the config, start munged,
#                                   slurmctld and slurmd, wait until the node takes jobs
#   .ci/slurm-setup.sh --no-install the same without apt (the test fixture calls this)
#   .ci/slurm-setup.sh --stop       stop the daemons this script started
#
# Needs root (it writes /etc/slurm/slurm.conf and starts daemons). Idempotent: when a controller already
# answers `scontrol ping` it does nothing. No accounting database: `sacct` does not work here, and the
# ddbench slurm launcher does not need it (it reads submitit's result files and `squeue`).
set -euo pipefail

STATE=${DDBENCH_SLURM_STATE:-/var/lib/ddbench-slurm}
CONF=/etc/slurm/slurm.conf
LOG=/var/log/slurm

say() { echo "slurm-setup: $*" >&2; }

# The daemons must not inherit the caller's open descriptors: run under a held `flock` (the CI runner does),
# a daemon keeping the lock's descriptor would hold the lock after .ci/run exits. `detached CMD...` starts CMD
# in its own session with every descriptor above stderr closed, and stdin/stdout/stderr on /dev/null.
detached() {
  setsid bash -c 'for fd in /proc/self/fd/*; do fd=${fd##*/}; [[ $fd -gt 2 ]] && eval "exec $fd>&-" 2>/dev/null; done; exec "$@"' \
    detached "$@" </dev/null >/dev/null 2>&1
}

pidfiles() { echo /run/slurmctld.pid /run/slurmd.pid /run/munge/munged.pid; }

if [[ "${1:-}" == "--stop" ]]; then
  # Jobs first, so no slurmstepd outlives its slurmd.
  if timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 50); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break; sleep 0.2; done
    fi
  fi
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    if [[ -f $f ]]; then kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
  done
  if [[ -f $STATE/started-munge && -f /run/munge/munged.pid ]]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$STATE/started-munge"
  fi
  say "stopped"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  say "must run as root (writes $CONF, starts slurmctld/slurmd/munged)"
  exit 1
fi

if [[ "${1:-}" != "--no-install" ]]; then
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
fi
for bin in slurmctld slurmd munged scontrol sbatch squeue; do
  command -v $bin >/dev/null || { say "$bin not found: install slurm-wlm and munge"; exit 1; }
done

if timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
  say "a controller already answers; nothing to do"
  exit 0
fi

mkdir -p "$STATE" "$LOG" /var/spool/slurmctld /var/spool/slurmd /etc/slurm /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0755 /run/munge
chmod 0700 /var/log/munge /var/lib/munge /etc/munge

# munge: a key, then the daemon (as the munge user, as the Debian service runs it).
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  detached runuser -u munge -- munged
  touch "$STATE/started-munge"
  for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { say "munge does not work (see /var/log/munge)"; exit 1; }

HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
cat >"$CONF" <<EOF
# Written by ddbench .ci/slurm-setup.sh: one node, localhost, no accounting database.
ClusterName=ddbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
detached slurmctld -i
# slurmd initialises a cgroup plugin even with proctrack/linuxproc; autodetect usually works, and
# containers with an odd cgroup mount get an explicit version instead.
start_slurmd() { detached slurmd && sleep 1 && pgrep -x slurmd >/dev/null; }
if ! start_slurmd; then
  for plugin in cgroup/v1 cgroup/v2; do
    say "slurmd did not start with cgroup autodetect; trying CgroupPlugin=$plugin"
    echo "CgroupPlugin=$plugin" >/etc/slurm/cgroup.conf
    start_slurmd && break
    rm -f /etc/slurm/cgroup.conf
  done
  pgrep -x slurmd >/dev/null || { say "slurmd does not start; see $LOG/slurmd.log"; tail -n 20 "$LOG/slurmd.log" >&2; exit 1; }
fi
for _ in $(seq 1 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
    say "SLURM is up: $(sinfo -h -o '%P %D %t %c')"
    exit 0
  fi
  state=$(sinfo -h -o %t 2>/dev/null || true)
  if [[ "$state" == down* || "$state" == drain* ]]; then scontrol update nodename="$HOST" state=resume 2>/dev/null || true; fi
  sleep 0.2
done
say "the node did not come up within 20 s; logs in $LOG"
tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
exit 1
