#!/usr/bin/env bash
# A throwaway one-node Slurm cluster for tests and CI (issue 13: `brims sweep --executor slurm`
# is tested against real daemons, not a mock).
#
#   scripts/slurm-local.sh start DIR    install (if needed and possible), configure and start
#                                       munged, slurmctld and slurmd; everything lives under DIR
#   scripts/slurm-local.sh stop DIR     cancel the cluster's jobs, then stop exactly the daemons
#                                       that `start DIR` started (pids from DIR's pid files)
#   scripts/slurm-local.sh status DIR   say whether the cluster under DIR is up (exit 0 if so)
#
# DIR is a directory the caller owns (typically a fresh temporary directory). After `start`,
# clients need `. DIR/env.sh` (it exports SLURM_CONF=DIR/slurm.conf); then sbatch, squeue,
# scancel, sinfo and scontrol talk to this cluster and nothing else.
#
# What `start` sets up under DIR:
#   munge/      munge.key (fresh random key), munge.socket, munged.pid, munged.log, munged.seed
#   slurm.conf  one node (this machine, `hostname -s`, at 127.0.0.1) with its real CPU count
#               (nproc) and memory (/proc/meminfo); partition `debug` (default, no time limit);
#               free unprivileged ports; select/cons_tres + CR_Core, so several 1-CPU tasks run
#               at once; proctrack/linuxproc and task/none (no cgroups); no accounting (sacct
#               does not work, as on many clusters); KillWait=30 (SIGTERM, 30 s, SIGKILL).
#               Two settings differ from a site's for the sake of quick tests: cred_expire=10
#               (a requeued job may start again after 11 s, not 121 s) and the schedulers run
#               every 2 s (a freed CPU is taken within seconds, not a minute).
#   state/ spool/ log/   slurmctld state, slurmd spool, daemon logs; *.pid pid files
#   env.sh      export SLURM_CONF=DIR/slurm.conf
#
# Things jobs should know, as on real clusters: `scancel` and a time limit send SIGTERM to every
# process of the job, then SIGKILL KillWait seconds later (the job holds its CPUs until then);
# `--signal=TERM@N` signals job steps only, `--signal=B:TERM@N` the batch script (use it, or
# exec the program from the script); a job that exits by itself is not requeued.
#
# Run as root, the daemons run as root (jobs run as the submitting user). Run as another user,
# with Slurm and munge already installed, all daemons run as that user (SlurmUser = SlurmdUser =
# you), which is enough for a cluster whose jobs are all yours.
#
# Exit codes: 0 up (or stopped); 1 a real failure (the daemon logs are printed); 2 Slurm cannot
# be provided here (not installed and we cannot install it; the message says what to install).
# Tests treat 2 as "skip, printing the reason".
#
# Installing: as root with apt-get, missing tools are installed with Debian's `slurm-wlm` and
# `munge` packages (services are kept from starting during the install: a temporary
# policy-rc.d is used when none exists). Nothing outside DIR is configured or started.
set -euo pipefail

prog=slurm-local
say() { echo "$prog: $*"; }
err() { echo "$prog: $*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 64
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

now_ms() { date +%s%3N; }

# --- pid files --------------------------------------------------------------------------------

# Each daemon's pid file. A pid is only used if that process's command line names the daemon
# and DIR (so a recycled pid is never signalled).
pidfile_of() {
    case $1 in
        munged) echo "$dir/munge/munged.pid" ;;
        slurmctld) echo "$dir/slurmctld.pid" ;;
        slurmd) echo "$dir/slurmd.pid" ;;
    esac
}

# Prints the pid of daemon $1 if its pid file names a live process that is that daemon and was
# started for this DIR; prints nothing otherwise.
live_pid() {
    local name=$1 pf pid cmdline
    pf=$(pidfile_of "$name")
    [ -s "$pf" ] || return 0
    pid=$(tr -dc '0-9' <"$pf")
    [ -n "$pid" ] || return 0
    [ -r "/proc/$pid/cmdline" ] || return 0
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    case $cmdline in
        *"$name"*"$dir/"*) echo "$pid" ;;
    esac
}

# Sends SIGTERM to the given pids, waits up to $2 seconds for all to exit, then SIGKILLs what is
# left. Only ever called with pids matched to this DIR (live_pid and our_job_pids below).
stop_pids() {
    local what=$1 grace=$2 pid left i
    shift 2
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        left=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        [ ${#left[@]} -eq 0 ] && return 0
        sleep 0.1
    done
    err "$what (pid ${left[*]}) still running ${grace}s after SIGTERM; sending SIGKILL"
    kill -KILL "${left[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        left=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        [ ${#left[@]} -eq 0 ] && return 0
        sleep 0.1
    done
    err "$what (pid ${left[*]}) survived SIGKILL"
}

# Processes that belong to this cluster's jobs but outlived its daemons (slurmd killed, say):
# slurmstepd (one per job step, started by our slurmd, whose environment it inherits) and the
# jobs' own processes (SLURM_JOB_ID set, started by those slurmstepds). Both carry
# SLURM_CONF=DIR/slurm.conf in their environment, which is how they are told apart from any
# other Slurm on the machine. $1 = stepd: slurmstepd only; job: everything else. This script
# and its ancestors are never listed.
our_job_pids() {
    local kind=$1 p pid comm envs self_chain=" $$ " a
    a=$PPID
    while [ -n "$a" ] && [ "$a" -gt 1 ] 2>/dev/null; do
        self_chain+="$a "
        a=$(awk '{ print $4 }' "/proc/$a/stat" 2>/dev/null || true)
    done
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        case $self_chain in *" $pid "*) continue ;; esac
        envs=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null) || continue
        grep -qxF "SLURM_CONF=$dir/slurm.conf" <<<"$envs" || continue
        comm=$(cat "$p/comm" 2>/dev/null || true)
        if [ "$kind" = stepd ]; then
            if [ "$comm" = slurmstepd ]; then echo "$pid"; fi
        elif [ "$comm" != slurmstepd ] && grep -q '^SLURM_JOB_ID=' <<<"$envs"; then
            echo "$pid"
        fi
    done
}

logs_to_stderr() {
    local f
    for f in "$dir/munge/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log" \
        "$dir"/log/*.out; do
        [ -s "$f" ] || continue
        err "--- last lines of $f"
        tail -n 25 "$f" >&2
    done
}

do_stop() {
    local pid t0
    [ -d "$dir" ] || { say "nothing to stop ($dir does not exist)"; return 0; }
    t0=$(now_ms)
    # Cancel the cluster's jobs first, the way Slurm does it (SIGTERM, then SIGKILL after
    # KillWait = 30 s): slurmstepd and the jobs' processes outlive slurmd otherwise.
    if [ -n "$(live_pid slurmctld)" ] && [ -n "$(live_pid slurmd)" ]; then
        local jobs deadline=$((SECONDS + 40))
        jobs=$(SLURM_CONF="$dir/slurm.conf" timeout 10 squeue -h -o %A 2>/dev/null | sort -u || true)
        if [ -n "$jobs" ]; then
            say "cancelling jobs:" $jobs
            # shellcheck disable=SC2086
            SLURM_CONF="$dir/slurm.conf" timeout 10 scancel $jobs 2>/dev/null || true
            while [ $SECONDS -lt $deadline ]; do
                [ -z "$(SLURM_CONF="$dir/slurm.conf" timeout 5 squeue -h -t R,CG,S -o %A \
                    2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    # shellcheck disable=SC2046
    stop_pids "slurmd/slurmctld" 10 $(live_pid slurmd) $(live_pid slurmctld)
    # Leftovers of jobs whose slurmd died before they were cancelled.
    # shellcheck disable=SC2046
    stop_pids "job processes" 5 $(our_job_pids job)
    # shellcheck disable=SC2046
    stop_pids slurmstepd 2 $(our_job_pids stepd)
    pid=$(live_pid munged)
    if [ -n "$pid" ]; then stop_pids munged 5 "$pid"; fi
    rm -f "$dir/munge/munged.pid" "$dir/slurmctld.pid" "$dir/slurmd.pid"
    say "stopped in $(( $(now_ms) - t0 ))ms ($dir)"
}

cluster_up() {
    [ -n "$(live_pid munged)" ] && [ -n "$(live_pid slurmctld)" ] && [ -n "$(live_pid slurmd)" ]
}

node_state() {
    SLURM_CONF="$dir/slurm.conf" sinfo -h -N -o %t 2>/dev/null | head -n 1 || true
}

# --- install ----------------------------------------------------------------------------------

ensure_installed() {
    local missing=() t
    for t in sbatch squeue scancel sinfo scontrol slurmctld slurmd munged; do
        command -v "$t" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$t" \
            >/dev/null 2>&1 || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local pkgs="slurm-wlm munge"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing $pkgs with apt-get (missing: ${missing[*]})..."
        local t0 log own_policy=
        t0=$(now_ms)
        log=$(mktemp)
        # Keep the packages' own services (system-wide munge, slurmctld, slurmd) from starting.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        local rc=0
        {
            DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                    $pkgs
        } >"$log" 2>&1 || rc=$?
        if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
        if [ $rc -ne 0 ]; then
            tail -n 20 "$log" >&2
            rm -f "$log"
            err "cannot provide Slurm here: apt-get install $pkgs failed (exit $rc)"
            exit 2
        fi
        rm -f "$log"
        say "installed $pkgs in $(( ($(now_ms) - t0) / 1000 ))s"
        export PATH=$PATH:/usr/sbin:/sbin
        return 0
    fi
    err "cannot provide Slurm here: ${missing[*]} not found, and installing needs root with apt-get."
    err "  Debian/Ubuntu: sudo apt-get install slurm-wlm munge"
    err "  Fedora/RHEL:   sudo dnf install slurm slurm-slurmctld slurm-slurmd munge"
    err "  (or run this script as root on Debian/Ubuntu and it installs them)"
    exit 2
}

# --- start ------------------------------------------------------------------------------------

# A TCP port on which nothing listens on this machine.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 40000))
        for taken in "$@"; do [ "$p" = "$taken" ] && continue 2; done
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

do_start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if cluster_up; then
        say "already running under $dir (node $(node_state)); SLURM_CONF=$dir/slurm.conf"
        return 0
    fi
    if [ -n "$(live_pid munged)$(live_pid slurmctld)$(live_pid slurmd)" ]; then
        say "some daemons under $dir are running, others not: stopping them to start afresh"
        do_stop
    fi

    ensure_installed
    export PATH=$PATH:/usr/sbin:/sbin
    local t0
    t0=$(now_ms)

    local user uid
    user=$(id -un)
    uid=$(id -u)
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    # munged refuses directories others can write to, and a key others can read.
    chmod 755 "$dir/munge"
    chmod 700 "$dir/state" "$dir/spool"

    # munge
    local key=$dir/munge/munge.key sock=$dir/munge/munge.socket
    # A unix socket path has at most 107 bytes.
    [ ${#sock} -le 100 ] || die "DIR is too long for munge's socket path ($sock); use a shorter one"
    if [ ! -s "$key" ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$key" >/dev/null 2>&1 ||
                dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
    fi
    chmod 600 "$key"
    rm -f "$sock" "$sock.lock"
    munged --socket="$sock" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        --key-file="$key" --force </dev/null >>"$dir/log/munged.out" 2>&1 ||
        { logs_to_stderr; die "munged failed to start"; }
    local i deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ]; do
        [ -S "$sock" ] && [ -n "$(live_pid munged)" ] && break
        sleep 0.1
    done
    if ! munge -n -S "$sock" 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1; then
        logs_to_stderr
        do_stop >/dev/null 2>&1 || true
        die "munged does not answer on $sock"
    fi

    # slurm.conf
    local node cpus mem_mb ctld_port d_port
    node=$(hostname -s 2>/dev/null || hostname)
    node=${node:-localhost}
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
    ctld_port=$(free_port)
    d_port=$(free_port "$ctld_port")
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster; everything lives under $dir.
ClusterName=brimslocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$sock,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=30
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf" >"$dir/env.sh"
    export SLURM_CONF=$dir/slurm.conf

    slurmctld -f "$SLURM_CONF" </dev/null >>"$dir/log/slurmctld.out" 2>&1 ||
        { logs_to_stderr; do_stop >/dev/null 2>&1 || true; die "slurmctld failed to start"; }
    slurmd -f "$SLURM_CONF" -N "$node" </dev/null >>"$dir/log/slurmd.out" 2>&1 ||
        { logs_to_stderr; do_stop >/dev/null 2>&1 || true; die "slurmd failed to start"; }

    # Wait (at most 30 s) for the node to register and become idle.
    local state=
    deadline=$((SECONDS + 30))
    for ((i = 0; SECONDS < deadline; i++)); do
        state=$(node_state)
        case $state in idle | idle~ | mix | alloc) break ;; esac
        if [ $((i % 10)) = 9 ] && { [ -z "$(live_pid slurmctld)" ] || [ -z "$(live_pid slurmd)" ]; }; then
            break
        fi
        sleep 0.1
    done
    case $state in
        idle | idle~ | mix | alloc) ;;
        *)
            logs_to_stderr
            do_stop >/dev/null 2>&1 || true
            die "the node did not become idle within 30 s (state: ${state:-none})"
            ;;
    esac
    say "up in $(( ($(now_ms) - t0) ))ms: node $node ($cpus CPUs, ${mem_mb} MB) $state," \
        "ports $ctld_port/$d_port, daemons as $user (uid $uid); . $dir/env.sh" \
        "(SLURM_CONF=$dir/slurm.conf)"
}

do_status() {
    [ -d "$dir" ] || { say "not running ($dir does not exist)"; exit 1; }
    dir=$(cd "$dir" && pwd -P)
    if cluster_up; then
        say "up under $dir: node $(node_state); SLURM_CONF=$dir/slurm.conf"
    else
        say "not running under $dir"
        exit 1
    fi
}

case $cmd in
    start) do_start ;;
    stop)
        if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd -P); fi
        do_stop
        ;;
    status) do_status ;;
    *) usage ;;
esac
