#!/usr/bin/env bash
# A real Slurm cluster on this machine, for tests and for trying the Slurm path without one:
# munged + slurmctld + N slurmd ("fake nodes" n1..nN, all on 127.0.0.1), every file under one
# private directory, every daemon stopped by the PID it was started with.
#
#   scripts/slurm_local.sh up     [--dir DIR] [--nodes N] [--cpus C]   start (restarts one running in DIR);
#                                  N nodes (default 4) of C CPUs (default 8: tasks per node)
#   scripts/slurm_local.sh status [--dir DIR]                          daemons and sinfo
#   scripts/slurm_local.sh env    [--dir DIR]                          `export SLURM_CONF=...`
#   scripts/slurm_local.sh down   [--dir DIR]                          stop all, keep the logs
#
# DIR defaults to $SWITCHYARD_SLURM_DIR, else /tmp/switchyard-slurm. After `up`, point the Slurm
# commands at it:  eval "$(scripts/slurm_local.sh env)"; sbatch ...; squeue
# Needs root (slurmd launches jobs as their user) and Debian's slurm-wlm and munge packages
# (scripts/setup.sh installs them). Ports are picked free at `up`.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "slurm_local: $*" >&2; exit 2; }

cmd=${1:-}
[[ -n $cmd ]] || { usage >&2; exit 2; }
shift
case $cmd in
  up|down|status|env) ;;
  -h|--help) usage; exit 0 ;;
  *) die "unknown command '$cmd': use up, down, status or env (see --help)" ;;
esac
dir=${SWITCHYARD_SLURM_DIR:-/tmp/switchyard-slurm}
nodes=4
cpus=8
while (($#)); do
  case $1 in
    --dir|--nodes|--cpus)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in --dir) dir=$2 ;; --nodes) nodes=$2 ;; --cpus) cpus=$2 ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $nodes =~ ^[0-9]{1,3}$ ]] && ((10#$nodes >= 1 && 10#$nodes <= 64)) || die "--nodes '$nodes': use 1..64"
[[ $cpus =~ ^[0-9]{1,4}$ ]] && ((10#$cpus >= 1 && 10#$cpus <= 256)) || die "--cpus '$cpus': use 1..256"
nodes=$((10#$nodes))
cpus=$((10#$cpus))
dir=$(realpath -m "$dir")
[[ ! -e $dir || -d $dir ]] || die "--dir $dir is not a directory"
conf=$dir/slurm.conf

# pid files this script wrote: name -> pid (one line each, "name pid")
pids=$dir/pids

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# PIDs of the processes this cluster started for jobs, which slurmd does not reap when it
# stops: its slurmstepds (they run in a node's spool directory under $dir) and the jobs'
# tasks and batch scripts (SLURM_CONF=$conf and a SLURMD_NODENAME, which only a slurmd sets;
# a user's shell with SLURM_CONF exported has none).
job_processes() {
  local p pid env
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    if [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd && $(readlink "$p/cwd" 2>/dev/null) == "$dir"/* ]]; then
      echo "$pid"
      continue
    fi
    env=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null) || continue
    if grep -qxF "SLURM_CONF=$conf" <<<"$env" && grep -q '^SLURMD_NODENAME=' <<<"$env"; then echo "$pid"; fi
  done
}

# Cancels the jobs, stops every daemon listed in $pids (SIGTERM, then SIGKILL after 5 s),
# then kills what the jobs left behind.
stop_all() {
  [[ -f $pids ]] || return 0
  if SLURM_CONF=$conf timeout 10 squeue -h -o %i >"$dir/jobs" 2>/dev/null && [[ -s $dir/jobs ]]; then
    SLURM_CONF=$conf timeout 10 scancel $(cat "$dir/jobs") 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z $(SLURM_CONF=$conf timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  local name pid left=()
  while read -r name pid; do
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; left+=("$pid"); fi
  done <"$pids"
  for _ in $(seq 50); do
    local any=0
    for pid in "${left[@]}"; do alive "$pid" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for pid in "${left[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
  local strays
  strays=$(job_processes)
  if [[ -n $strays ]]; then
    echo "slurm_local: killing $(echo $strays | wc -w) processes the jobs left behind" >&2
    kill -KILL $strays 2>/dev/null || true
  fi
  rm -f "$pids"
}

# N consecutive free TCP ports on 127.0.0.1 (probing with bash's /dev/tcp: a port nobody
# answers on is free).
free_ports() {
  local want=$1 base
  for _ in $(seq 200); do
    base=$((20000 + RANDOM % 40000))
    local ok=1
    for ((p = base; p < base + want; p++)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=0; break; fi
    done
    ((ok)) && { echo "$base"; return 0; }
  done
  die "no $want free consecutive ports found"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "slurm_local: $what did not come up in ${seconds}s; logs in $dir" >&2
  return 1
}

up() {
  [[ $(id -u) -eq 0 ]] || die "needs root (slurmd runs jobs as their user)"
  for b in munged mungekey slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null || die "$b not found: run scripts/setup.sh (slurm-wlm, munge)"
  done
  if [[ -f $pids ]]; then  # left over (a killed test run): this directory is ours, start afresh
    echo "slurm_local: stopping what an earlier 'up' left running in $dir"
    stop_all
  fi
  local host
  host=$(hostname -s)
  # Only a directory of ours (or a new or empty one): `up` deletes what an earlier one made.
  if [[ -d $dir && -n $(ls -A "$dir") ]] && ! grep -qs '^# Written by scripts/slurm_local.sh' "$conf"; then
    die "--dir $dir is not empty and holds no cluster of this script: give a new or empty directory"
  fi
  mkdir -p "$dir" || die "cannot create --dir $dir"
  chmod 755 "$dir"
  rm -rf "$dir/state" "$dir"/n[0-9]* "$dir/munge"
  mkdir -p "$dir/state" "$dir/munge/run" "$dir/munge/key" "$dir/munge/log"
  chmod 755 "$dir/munge" "$dir/munge/run"
  chmod 700 "$dir/munge/key" "$dir/munge/log"
  mungekey --create --keyfile="$dir/munge/key/munge.key" --force
  chmod 600 "$dir/munge/key/munge.key"
  : >"$pids"

  local base
  base=$(free_ports $((nodes + 1)))
  cat >"$conf" <<EOF
# Written by scripts/slurm_local.sh: ${nodes} fake nodes on 127.0.0.1.
ClusterName=switchyard
# Job ids continue from the clock, so a restarted cluster never reuses one (job directories
# are named by job id).
FirstJobId=$(( $(date +%s) % 50000000 + 1000 ))
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${base}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${dir}/munge/run/munge.socket.2
CredType=cred/munge
StateSaveLocation=${dir}/state
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdPidFile=${dir}/%n/slurmd.pid
SlurmdLogFile=${dir}/%n/slurmd.log
SlurmdSpoolDir=${dir}/%n
TmpFS=${dir}/%n
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
NodeName=n[1-${nodes}] NodeHostname=${host} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN Port=[$((base + 1))-$((base + nodes))]
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

  munged --force --socket="$dir/munge/run/munge.socket.2" --key-file="$dir/munge/key/munge.key" \
    --log-file="$dir/munge/log/munged.log" --pid-file="$dir/munge/run/munged.pid" \
    --seed-file="$dir/munge/key/munged.seed"
  wait_for 10 munged test -s "$dir/munge/run/munged.pid" || { stop_all; exit 1; }
  echo "munged $(cat "$dir/munge/run/munged.pid")" >>"$pids"

  export SLURM_CONF=$conf
  slurmctld -f "$conf" -i
  wait_for 10 slurmctld test -s "$dir/slurmctld.pid" || { stop_all; exit 1; }
  echo "slurmctld $(cat "$dir/slurmctld.pid")" >>"$pids"
  for ((n = 1; n <= nodes; n++)); do
    mkdir -p "$dir/n$n"
    slurmd -f "$conf" -N "n$n"
    wait_for 10 "slurmd n$n" test -s "$dir/n$n/slurmd.pid" || { stop_all; exit 1; }
    echo "slurmd-n$n $(cat "$dir/n$n/slurmd.pid")" >>"$pids"
  done
  idle() { [[ $(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l) -eq $nodes ]]; }
  wait_for 30 "the $nodes nodes (idle in sinfo)" idle || { stop_all; exit 1; }
  echo "slurm_local: up in $dir with $nodes nodes (n1..n$nodes), $cpus CPUs each"
  echo "slurm_local: eval \"\$($0 env --dir $dir)\" to use it"
}

status() {
  [[ -f $pids ]] || { echo "slurm_local: not running in $dir"; return 3; }
  local down=0 name pid
  while read -r name pid; do
    if alive "$pid"; then echo "$name pid $pid running"; else echo "$name pid $pid NOT running"; down=1; fi
  done <"$pids"
  SLURM_CONF=$conf sinfo -N -o '%N %T %c' 2>&1 || down=1
  return $down
}

case $cmd in
  up) up ;;
  down)
    if [[ -f $pids ]]; then
      stop_all
      echo "slurm_local: down ($dir kept for its logs)"
    else
      echo "slurm_local: nothing running in $dir"
    fi ;;
  status) status ;;
  env) printf 'export SLURM_CONF=%q\n' "$conf" ;;
esac
