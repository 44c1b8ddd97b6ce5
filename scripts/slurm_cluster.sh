#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, built from Debian packages, with Jean Zay's partition
# and account names: for the SLURM test and for trying `snakemake --profile jeanzay` locally.
#
#   scripts/slurm_cluster.sh start DIR [PROJECT]   start it; the last line printed is
#                                                  `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm_cluster.sh stop DIR              stop every daemon it started
#   scripts/slurm_cluster.sh status DIR
#
# Everything lives in DIR (configuration, state, spool, logs, sockets, database) and listens on
# free loopback ports; no system service is used. One thing is outside DIR: /etc/slurm/slurm.conf
# becomes a link to DIR/slurm.conf while the cluster runs (removed by stop), because job steps need
# it: snakemake's jobstep executor runs each rule with `srun` after dropping every SLURM_* variable,
# SLURM_CONF included, so srun reads the default path. start refuses to replace a real
# /etc/slurm/slurm.conf. Needs root (the daemons run as root) and the Debian 12 packages
# slurmctld slurmd slurmdbd slurm-client slurm-wlm-mysql-plugin munge mariadb-server
# (scripts/setup.sh --test installs them).
#
# Accounting: `sacct` (which snakemake-executor-plugin-slurm polls, and which the test reads) needs
# slurmdbd in SLURM 22.05: accounting_storage/filetxt no longer exists, and jobcomp/filetxt is only
# read by `sacct --completion`, without accounts or comments. So slurmdbd stores jobs in a private
# MariaDB (started with --skip-grant-tables, bound to 127.0.0.1, data in DIR/db).
#
# The node mimics a Jean Zay node (40 cores, 4 GB per core, memory allocated per core) whatever
# this machine has (SlurmdParameters=config_overrides); partitions prepost, cpu_p1 (default),
# gpu_p13, gpu_p5, gpu_p6 with Jean Zay's time limits (EnforcePartLimits=ALL), no GPUs.
# Accounts PROJECT@cpu, PROJECT@v100, PROJECT@a100, PROJECT@h100 for the current user, enforced.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
project="${3:-nud}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi

log() { echo "slurm_cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 > limit )); then
      return 1
    fi
    sleep 0.5
  done
  log "$what ready after $((SECONDS - t0)) s"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

read_pid() { cat "$1" 2>/dev/null || true; }  # a daemon removes its own pidfile when it exits

stop_pid() {  # stop_pid PID PIDFILE NAME: TERM, wait up to 30 s, then KILL
  local pid=$1 pidfile=$2 name=$3
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not stop: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

ETC_CONF=/etc/slurm/slurm.conf

do_stop() {
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$dir/slurm.conf" ]; then
    rm -f "$ETC_CONF"
  fi
  # Read every pid before `scontrol shutdown`: slurmd and slurmctld delete their pidfiles as they exit,
  # and reading one after that (a race CI lost once) must not leave the other daemons running.
  local name
  declare -A pids
  for name in slurmd slurmctld slurmdbd mariadb munged; do pids[$name]=$(read_pid "$dir/run/$name.pid"); done
  if [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF="$dir/slurm.conf" timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  fi
  for name in slurmd slurmctld slurmdbd mariadb munged; do stop_pid "${pids[$name]}" "$dir/run/$name.pid" "$name"; done
  log "stopped (files kept in $dir)"
}

do_start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the SLURM daemons and munged run as root here)"
  for exe in munged mungekey slurmctld slurmd slurmdbd sacctmgr sinfo scontrol mariadbd mariadb-install-db mariadb-admin python3; do
    command -v "$exe" >/dev/null || die "$exe not found: apt-get install slurmctld slurmd slurmdbd slurm-client slurm-wlm-mysql-plugin munge mariadb-server (or scripts/setup.sh --test)"
  done
  [[ "$project" =~ ^[a-z0-9]+$ ]] || die "project name '$project' must be lower-case letters and digits"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if pid_alive "$dir/run/slurmctld.pid"; then die "a cluster is already running in $dir (stop it first)"; fi
  if [ -e "$ETC_CONF" ] && [ ! -L "$ETC_CONF" ]; then
    die "$ETC_CONF exists (a real SLURM here?): job steps would read it instead of this cluster's configuration"
  fi
  chmod 700 "$dir"
  mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool" "$dir/db" "$dir/tmp"
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then log "start failed: stopping what was started"; do_stop; fi' EXIT

  local user; user=$(id -un)
  local p_db p_dbd p_ctld p_d
  p_db=$(free_port); p_dbd=$(free_port); p_ctld=$(free_port); p_d=$(free_port)

  # munge: a private key and socket
  if [ ! -f "$dir/munge.key" ]; then
    mungekey --create --keyfile="$dir/munge.key" --bits=1024
  fi
  chmod 600 "$dir/munge.key"
  munged --force --socket="$dir/run/munge.sock" --key-file="$dir/munge.key" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/run/munged.seed" </dev/null >>"$dir/log/munged.out" 2>&1
  wait_for 20 munged bash -c "munge -n -S '$dir/run/munge.sock' | unmunge -S '$dir/run/munge.sock'" \
    || { tail -5 "$dir/log/munged.log" >&2; false; }

  # MariaDB for slurmdbd
  if [ ! -d "$dir/db/mysql" ]; then
    mariadb-install-db --no-defaults --user="$user" --datadir="$dir/db" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/log/mariadb-install.log" 2>&1 || { tail -20 "$dir/log/mariadb-install.log" >&2; false; }
  fi
  setsid mariadbd --no-defaults --user="$user" --datadir="$dir/db" --socket="$dir/run/mariadb.sock" \
    --bind-address=127.0.0.1 --port="$p_db" --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" \
    --tmpdir="$dir/tmp" --skip-grant-tables --skip-name-resolve --innodb-buffer-pool-size=128M \
    --innodb-lock-wait-timeout=900 </dev/null >>"$dir/log/mariadb.out" 2>&1 &
  wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$dir/run/mariadb.sock" ping \
    || { tail -20 "$dir/log/mariadb.log" >&2; false; }

  cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.sock
DbdHost=localhost
DbdPort=$p_dbd
SlurmUser=$user
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$p_db
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dir/slurmdbd.conf"

  cat >"$dir/slurm.conf" <<EOF
# generated by scripts/slurm_cluster.sh: a one-node cluster with Jean Zay's partition names
ClusterName=nudgeml
SlurmctldHost=localhost
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.sock
CredType=cred/munge
SlurmctldPort=$p_ctld
SlurmdPort=$p_d
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=4000
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
EnforcePartLimits=ALL
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$p_dbd
AccountingStoragePass=$dir/run/munge.sock
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
NodeName=localhost NodeAddr=127.0.0.1 CPUs=40 Sockets=2 CoresPerSocket=20 ThreadsPerCore=1 RealMemory=160000 State=UNKNOWN
PartitionName=prepost Nodes=localhost MaxTime=20:00:00 DefaultTime=02:00:00 State=UP
PartitionName=cpu_p1 Nodes=localhost MaxTime=100:00:00 DefaultTime=00:10:00 Default=YES State=UP
PartitionName=gpu_p13 Nodes=localhost MaxTime=100:00:00 DefaultTime=00:10:00 State=UP
PartitionName=gpu_p5 Nodes=localhost MaxTime=20:00:00 DefaultTime=00:10:00 State=UP
PartitionName=gpu_p6 Nodes=localhost MaxTime=100:00:00 DefaultTime=00:10:00 State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  if [ -L "$ETC_CONF" ] && [[ "$(readlink "$ETC_CONF")" == */slurm.conf ]] && ! pid_alive "$(dirname "$(readlink "$ETC_CONF")")/run/slurmctld.pid"; then
    rm -f "$ETC_CONF"  # left by a test cluster that was not stopped
  fi
  if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    die "$ETC_CONF exists (a real SLURM, or another test cluster running): job steps would read it instead of $dir/slurm.conf"
  fi
  mkdir -p "$(dirname "$ETC_CONF")"
  ln -s "$dir/slurm.conf" "$ETC_CONF"

  slurmdbd </dev/null >>"$dir/log/slurmdbd.out" 2>&1
  wait_for 60 slurmdbd sacctmgr -n show cluster || { tail -20 "$dir/log/slurmdbd.log" >&2; false; }
  sacctmgr -i add cluster nudgeml >/dev/null
  local accounts=()
  for suffix in cpu v100 a100 h100; do accounts+=("$project@$suffix"); done
  sacctmgr -i add account "${accounts[@]}" >/dev/null
  sacctmgr -i add user "$user" account="$(IFS=,; echo "${accounts[*]}")" defaultaccount="$project@cpu" >/dev/null

  slurmctld </dev/null >>"$dir/log/slurmctld.out" 2>&1
  slurmd -N localhost </dev/null >>"$dir/log/slurmd.out" 2>&1
  wait_for 60 "node localhost idle" bash -c "sinfo -h -N -n localhost -o %T | grep -qx idle" \
    || { tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2; false; }
  trap - EXIT
  log "up: partitions $(sinfo -h -o %P | tr '\n' ' '), accounts ${accounts[*]}"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status)
    export SLURM_CONF="$(cd "$dir" && pwd)/slurm.conf"
    sinfo
    sacctmgr -n show associations format=account,user
    ;;
  *) die "unknown command '$cmd' (start|stop|status)" ;;
esac
