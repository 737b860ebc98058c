#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (munge, slurmctld, slurmd; no
# accounting daemon) so that tests can submit the workflow with the SLURM executor plugin.
# Run as root. Installs the Debian packages if needed. Records the PIDs it starts in
# $FEDUNET_SLURM_STATE/pids, and stop.sh stops exactly those. Prints the partition name.
#
# Knobs: FEDUNET_SLURM_STATE (default /var/lib/fedunet-slurm), FEDUNET_SLURM_PARTITION
# (default debug), FEDUNET_SLURM_TIMEOUT (seconds to wait for the node, default 90).
set -euo pipefail
STATE="${FEDUNET_SLURM_STATE:-/var/lib/fedunet-slurm}"
PARTITION="${FEDUNET_SLURM_PARTITION:-debug}"
TIMEOUT="${FEDUNET_SLURM_TIMEOUT:-90}"
CONF=/etc/slurm/slurm.conf   # srun inside jobs reads only the compiled-in path
TAG="# written by fedunet-bench scripts/slurm/start.sh"
say() { echo "[slurm] $*" >&2; }
fail() { echo "[slurm] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root"
missing=0
for bin in slurmctld slurmd sbatch squeue sinfo munged munge; do command -v "$bin" >/dev/null || missing=1; done
if [ "$missing" = 1 ]; then
  say "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
fi
if [ -f "$STATE/pids" ] && scontrol ping >/dev/null 2>&1 && [[ "$(sinfo -h -o %t 2>/dev/null | head -1)" =~ ^(idle|mix|alloc) ]]; then
  say "already running"
  sed -n 's/^PartitionName=\([^ ]*\).*/\1/p' "$CONF"
  exit 0
fi
mkdir -p "$STATE"/spool "$STATE"/ctld "$STATE"/log
chmod 755 "$STATE"

# ------------------------------------------------------------------ munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || head -c 1024 /dev/urandom > /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  # foreground daemon in its own session: the recorded PID is the daemon itself
  setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F --force \
    >"$STATE/log/munged.out" 2>&1 </dev/null &
  echo "munged $!" >> "$STATE/pids"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null 2>&1 || fail "munged did not start: $(cat "$STATE/log/munged.out")"
fi

# ------------------------------------------------------------------ slurm.conf
if [ -f "$CONF" ] && ! grep -qF "$TAG" "$CONF"; then
  fail "$CONF exists and was not written by this script; not overwriting it"
fi
host="$(hostname -s)"
hardware="$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')"
mkdir -p /etc/slurm
cat > "$CONF" <<CONF
$TAG
ClusterName=fedunet-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# No slurmdbd: the executor polls with squeue, which must remember finished jobs for
# at least 3 x its initial wait (MinJobAge is in seconds).
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# ------------------------------------------------------------------ daemons (foreground, own session)
for daemon in slurmctld slurmd; do
  setsid "/usr/sbin/$daemon" -D -f "$CONF" >"$STATE/log/$daemon.out" 2>&1 </dev/null &
  echo "$daemon $!" >> "$STATE/pids"
  [ "$daemon" = slurmctld ] && for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
done

end=$(( $(date +%s) + TIMEOUT ))
until [[ "$(sinfo -h -n "$host" -o %t 2>/dev/null)" =~ ^(idle|mix|alloc) ]]; do
  if [ "$(date +%s)" -gt "$end" ]; then
    tail -n 20 "$STATE"/log/* >&2 || true
    fail "node $host not idle after ${TIMEOUT}s"
  fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
say "cluster up: node $host idle in partition $PARTITION"
echo "$PARTITION"
