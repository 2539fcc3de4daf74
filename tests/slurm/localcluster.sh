#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1, for tests.
#
#   tests/slurm/localcluster.sh start <statedir>   # install if missing, configure, start, wait until idle
#   tests/slurm/localcluster.sh stop  <statedir>   # stop the daemons started for <statedir>
#
# Everything (munge key and socket, slurm.conf, state, spool, pid and log files)
# lives under <statedir>; nothing in /etc is changed. After `start`, clients need
#   export SLURM_CONF=<statedir>/slurm.conf PATH=<statedir>/bin:$PATH
# (written to <statedir>/env.sh). <statedir>/bin holds wrappers of the SLURM
# clients that set SLURM_CONF themselves: snakemake's slurm-jobstep executor
# removes every SLURM_* variable (SLURM_CONF included) from the environment of
# the `srun` it starts inside a job, and without a config in /etc that srun
# fails with "Could not establish a configuration source".
# Needs root (Debian packages, daemons as root). Both commands are idempotent.
#
# Environment: LOCALCLUSTER_PORT  slurmctld port (slurmd uses +1); default: the
#              first free pair from 6817 on, so two clusters can run side by side.
#              LOCALCLUSTER_MEM_HEADROOM_MB  memory not offered to jobs (default 1024).
#              LOCALCLUSTER_TIMEOUT  seconds to wait for the node to become idle (default 30).
#              LOCALCLUSTER_CPUS  CPUs the node declares (default: the real ones). More than the
#              machine has (SlurmdParameters=config_overrides) lets SLURM run that many 1-CPU
#              jobs side by side on fewer cores: benchmarks/slurm_concepts.py sees parallelism
#              that way; the jobs then share the real cores.
#              LOCALCLUSTER_ACCOUNTING=1  job accounting as on a production cluster: slurmdbd
#              on a MariaDB server of its own under <statedir>/mysql (ports: slurmctld's +1000
#              and +1001), jobacct_gather/linux; `sacct` then works (status queries, the
#              plugin's --slurm-efficiency-report). Installs slurmdbd and mariadb-server.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "localcluster: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|status <statedir>" >&2; exit 2; }

[[ $# -eq 2 ]] || usage
action=$1
S=$(realpath -m -- "$2")

accounting() { [[ ${LOCALCLUSTER_ACCOUNTING:-0} == 1 ]]; }

install_packages() {
    if accounting; then PACKAGES+=(slurmdbd mariadb-server); fi
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && [[ -x /usr/sbin/munged ]] \
        && { ! accounting || { command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; }; }; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "SLURM is not installed and installing it needs root"
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is unavailable"
    echo "localcluster: installing ${PACKAGES[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

choose_port() {
    if [[ -n ${LOCALCLUSTER_PORT:-} ]]; then echo "$LOCALCLUSTER_PORT"; return; fi
    local p
    for ((p = 6817; p < 6917; p += 2)); do
        if ! port_in_use "$p" && ! port_in_use $((p + 1)); then echo "$p"; return; fi
    done
    die "no free port pair in 6817-6916"
}

pid_alive() {  # pid_alive <pidfile>
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
    local port=$1 host node_line real_mem headroom mem overrides
    host=$(hostname -s)
    headroom=${LOCALCLUSTER_MEM_HEADROOM_MB:-1024}
    # First line of `slurmd -C`: NodeName=h CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=N
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node_line"
    real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
    mem=$((real_mem - headroom))
    ((mem >= 256)) || mem=$((real_mem / 2))
    node_line=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$mem/" \
                    -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host/" <<<"$node_line")
    overrides=""
    if [[ -n ${LOCALCLUSTER_CPUS:-} ]]; then
        [[ $LOCALCLUSTER_CPUS =~ ^[1-9][0-9]*$ ]] || die "LOCALCLUSTER_CPUS must be a positive integer: '$LOCALCLUSTER_CPUS'"
        node_line=$(sed -e "s/CPUs=[0-9]*/CPUs=$LOCALCLUSTER_CPUS/" -e "s/Boards=[0-9]*/Boards=1/" \
                        -e "s/SocketsPerBoard=[0-9]*/SocketsPerBoard=1/" \
                        -e "s/CoresPerSocket=[0-9]*/CoresPerSocket=$LOCALCLUSTER_CPUS/" \
                        -e "s/ThreadsPerCore=[0-9]*/ThreadsPerCore=1/" <<<"$node_line")
        overrides="SlurmdParameters=config_overrides"
    fi
    local acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    if accounting; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$host
AccountingStoragePort=$((port + 1000))
AccountingStoragePass=$S/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux"
        write_dbd_config "$port" "$host"
    fi
    cat >"$S/slurm.conf.tmp" <<CONF
# Generated by tests/slurm/localcluster.sh: one node on 127.0.0.1, no cgroups (accounting: LOCALCLUSTER_ACCOUNTING).
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge/munge.socket
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# cgroup proctrack fails every step here ("cgroup namespace 'freezer' not mounted")
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# several 1-CPU jobs share the node
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue (>= 3 x slurm-init-seconds-before-status-checks)
MinJobAge=600
# reject at submission what can never run here (more CPUs than the node, a
# partition limit); without it such a job pends forever (reason PartitionConfig)
EnforcePartLimits=ALL
KillWait=5
InactiveLimit=0
$overrides
$node_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$S/slurm.conf.tmp" "$S/slurm.conf"
}

write_dbd_config() {  # write_dbd_config <slurmctld port> <host>
    cat >"$S/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$S/munge/munge.socket
DbdHost=$2
DbdAddr=127.0.0.1
DbdPort=$(($1 + 1000))
SlurmUser=root
PidFile=$S/run/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$(($1 + 1001))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$S/slurmdbd.conf"
}

start_accounting() {  # MariaDB, then slurmdbd, then the cluster's record (before slurmctld)
    local D=$S/mysql port i
    port=$(sed -n 's/^StoragePort=//p' "$S/slurmdbd.conf")
    if ! pid_alive "$D/mariadbd.pid"; then
        if [[ ! -d $D/mysql ]]; then
            mkdir -p "$D"
            mariadb-install-db --no-defaults --datadir="$D" --user=root --skip-test-db \
                >"$S/log/mariadb-install.log" 2>&1 || { cat "$S/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
        fi
        setsid mariadbd --no-defaults --datadir="$D" --socket="$D/mariadbd.sock" --pid-file="$D/mariadbd.pid" \
            --port="$port" --bind-address=127.0.0.1 --user=root --log-error="$S/log/mariadb.log" </dev/null >/dev/null 2>&1 &
        for ((i = 0; i < 150; i++)); do [[ -S $D/mariadbd.sock ]] && break; sleep 0.2; done
        [[ -S $D/mariadbd.sock ]] || { tail -n 20 "$S/log/mariadb.log" >&2; die "mariadbd did not start"; }
        mariadb --no-defaults --socket="$D/mariadbd.sock" -u root -e \
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" \
            || die "could not create the database user of slurmdbd"
    fi
    if ! pid_alive "$S/run/slurmdbd.pid"; then
        slurmdbd || true   # daemonises; reads slurmdbd.conf next to SLURM_CONF
        for ((i = 0; i < 150; i++)); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    sacctmgr -n -P list cluster format=cluster | grep -qx localcluster \
        || sacctmgr -i add cluster localcluster >/dev/null \
        || { tail -n 20 "$S/log/slurmdbd.log" >&2; die "slurmdbd: could not register the cluster"; }
}

write_client_wrappers() {
    local c real
    mkdir -p "$S/bin"
    for c in sbatch srun salloc squeue scontrol sinfo scancel sacct sacctmgr sstat; do
        real=$(PATH=${PATH//"$S/bin:"/} command -v "$c") || continue
        printf '#!/bin/sh\nSLURM_CONF=%s/slurm.conf exec %s "$@"\n' "$S" "$real" >"$S/bin/$c"
        chmod 755 "$S/bin/$c"
    done
    printf 'export SLURM_CONF=%s/slurm.conf\nexport PATH=%s/bin:$PATH\n' "$S" "$S" >"$S/env.sh"
}

start_munge() {
    local M=$S/munge
    pid_alive "$M/munged.pid" && return 0
    mkdir -p "$M"
    chmod 700 "$M"
    if [[ ! -s $M/munge.key ]]; then
        dd if=/dev/urandom of="$M/munge.key.tmp" bs=1024 count=1 status=none
        chmod 400 "$M/munge.key.tmp"
        mv "$M/munge.key.tmp" "$M/munge.key"
    fi
    # --force: run as root and accept a key below a world-writable /tmp.
    /usr/sbin/munged --force --key-file="$M/munge.key" --socket="$M/munge.socket" \
        --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/munged.seed" \
        || { cat "$M/munged.log" >&2 2>/dev/null; die "munged failed to start"; }
}

dump_logs() {
    local f
    for f in "$S/munge/munged.log" "$S/log/slurmctld.log" "$S/log/slurmd.log"; do
        [[ -f $f ]] && { echo "==== $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }
    done
    return 0
}

wait_idle() {
    local timeout=${LOCALCLUSTER_TIMEOUT:-30} t0=$SECONDS state=""
    while ((SECONDS - t0 < timeout)); do
        if scontrol ping 2>/dev/null | grep -q "is UP"; then
            state=$(sinfo -h -p debug -o %T 2>/dev/null | head -n 1)
            case $state in
                idle | mixed | allocated) return 0 ;;
                inval* | drain* | down*) break ;;
            esac
        fi
        sleep 0.2
    done
    echo "localcluster: cluster not ready after ${timeout}s (node state: '${state:-none}')" >&2
    scontrol show node >&2 2>/dev/null || true
    dump_logs
    exit 1
}

start() {
    install_packages
    mkdir -p "$S"/{ctld,spool,run,log}
    start_munge
    if [[ ! -s $S/slurm.conf ]] || ! pid_alive "$S/run/slurmctld.pid"; then
        # (re)write the config only when no controller is running with it
        stop_pidfile "$S/run/slurmd.pid" slurmd
        write_config "$(choose_port)"
    fi
    write_client_wrappers
    export SLURM_CONF=$S/slurm.conf
    if accounting; then start_accounting; fi
    if ! pid_alive "$S/run/slurmctld.pid"; then
        slurmctld -c -f "$SLURM_CONF" || true   # daemonises, exit status is meaningless
    fi
    if ! pid_alive "$S/run/slurmd.pid"; then
        slurmd -f "$SLURM_CONF" || true
    fi
    wait_idle
    echo "localcluster: up; clients: . $S/env.sh" >&2
}

stop_pidfile() {  # stop_pidfile <pidfile> <name>
    local pidfile=$1 pid i
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do  # 10 s
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "localcluster: $2 (pid $pid) ignored SIGTERM, killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
}

cancel_jobs() {  # cancel what is still queued or running, so no job step outlives slurmd
    local ids i
    pid_alive "$S/run/slurmctld.pid" && [[ -x $S/bin/squeue ]] || return 0
    ids=$("$S/bin/squeue" -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %A 2>/dev/null) || return 0
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    "$S/bin/scancel" $ids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do  # 10 s
        [[ -z $("$S/bin/squeue" -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %A 2>/dev/null) ]] && return 0
        sleep 0.2
    done
    echo "localcluster: jobs still running after scancel" >&2
}

stop() {
    [[ -d $S ]] || return 0
    cancel_jobs
    stop_pidfile "$S/run/slurmd.pid" slurmd
    stop_pidfile "$S/run/slurmctld.pid" slurmctld
    stop_pidfile "$S/run/slurmdbd.pid" slurmdbd
    stop_pidfile "$S/mysql/mariadbd.pid" mariadbd
    stop_pidfile "$S/munge/munged.pid" munged
}

status() {
    local f rc=0
    for f in "$S/munge/munged.pid" "$S/run/slurmctld.pid" "$S/run/slurmd.pid"; do
        if pid_alive "$f"; then echo "$(basename "$f" .pid): running ($(cat "$f"))"; else echo "$(basename "$f" .pid): stopped"; rc=1; fi
    done
    return $rc
}

case $action in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
