#!/bin/sh
# Slurm Prolog (runs as root on the compute node): record the job on each of its GPUs in
# dcgm-exporter's HPC job-mapping directory, which `gpuledger agent --job-mapping-dir` reads.
# One file per GPU index; each line is one job id. Never fails the job: errors are logged
# and the script exits 0.
#
#   SLURM_JOB_ID               the job to record
#   SLURM_JOB_GPUS             GPU indices, e.g. "0,1" or "0-3,6" (CUDA_VISIBLE_DEVICES as fallback)
#   GPULEDGER_JOB_MAPPING_DIR  default /var/lib/dcgm-exporter/job-mapping

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
# Site settings (GPULEDGER_SERVER, GPULEDGER_TOKEN_FILE, GPULEDGER_JOB_MAPPING_DIR, ...): KEY=value lines.
conf=${GPULEDGER_SLURM_CONF:-/etc/gpuledger/slurm.env}
if [ -r "$conf" ]; then set -a; . "$conf"; set +a; fi
hook=${GPULEDGER_SLURM_HOOK:-$(dirname "$0")/gpuledger-slurm-hook}

# Tell the server (GPULEDGER_SERVER) the job started, with Slurm's metadata; at most 1 s, never fails.
notify() {
    if [ -n "${GPULEDGER_SERVER:-}" ] && [ -x "$hook" ]; then "$hook" start || log "job $job: $hook start failed"; fi
}
  # the agent reads the files as an unprivileged user
tag=gpuledger-prolog
dir=${GPULEDGER_JOB_MAPPING_DIR:-/var/lib/dcgm-exporter/job-mapping}
job=${SLURM_JOB_ID:-}
gpus=${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}

log() {
    echo "$tag: $*" >&2
    if command -v logger >/dev/null 2>&1; then logger -t "$tag" -p user.warning -- "$*" 2>/dev/null; fi
}

# "007" -> "7" (shell arithmetic would read a leading 0 as octal)
decimal() {
    n=$1
    while :; do case $n in 0?*) n=${n#0} ;; *) break ;; esac; done
    echo "$n"
}

# "0-1,3" -> "0 1 3"; tokens that are not an index or a range (e.g. GPU UUIDs) are logged and skipped.
expand() {
    old_ifs=$IFS; IFS=,
    for item in $1; do
        IFS=$old_ifs
        case $item in
            '') ;;
            *[!0-9-]* | -* | *- | *-*-*) log "job $job: ignoring GPU '$item' (not an index or a range)" ;;
            *-*)
                i=$(decimal "${item%-*}"); last=$(decimal "${item#*-}")
                while [ "$i" -le "$last" ]; do echo "$i"; i=$((i + 1)); done ;;
            *) decimal "$item" ;;
        esac
    done
    IFS=$old_ifs
}

# Serialise with other prologs/epilogs on this node: flock(1) where present (released if we
# die), else a mkdir lock given up after 10 s so that a stale lock never blocks a job.
lock() {
    if command -v flock >/dev/null 2>&1; then
        # `command` keeps a failed redirection from exiting the shell (and failing the job).
        { command exec 9>"$dir/.lock" && flock -w 10 9; } 2>/dev/null || log "job $job: no lock on $dir/.lock; going on"
        return
    fi
    n=0
    until mkdir "$dir/.lock.d" 2>/dev/null; do
        n=$((n + 1))
        if [ "$n" -ge 10 ]; then log "job $job: stale lock $dir/.lock.d; going on"; return; fi
        sleep 1
    done
    mkdir_lock=1; trap 'rmdir "$dir/.lock.d" 2>/dev/null' EXIT
}

# Release the lock before notifying the server, which may take up to a second.
unlock() {
    { command exec 9>&-; } 2>/dev/null
    if [ -n "${mkdir_lock:-}" ]; then mkdir_lock=; trap - EXIT; rmdir "$dir/.lock.d" 2>/dev/null; fi
}

case $job in
    '' | *[!0-9A-Za-z_.+-]*) log "SLURM_JOB_ID '$job' missing or invalid; nothing recorded"; exit 0 ;;
esac
indices=$(expand "$gpus")
[ -n "$indices" ] || exit 0  # a job without GPUs: nothing to record or account

map() {
    mkdir -p "$dir" || { log "job $job: cannot create $dir"; return 0; }
    lock
    for index in $indices; do
        file=$dir/$index
        if [ -f "$file" ] && grep -qxF -- "$job" "$file"; then
            continue  # already recorded (prolog re-run, e.g. on requeue)
        fi
        tmp=$dir/.tmp.$index.$$
        { if [ -f "$file" ]; then cat "$file"; fi; echo "$job"; } >"$tmp" && mv -f "$tmp" "$file" \
            || { log "job $job: cannot write $file"; rm -f "$tmp"; }
    done
    unlock
}

map
notify
exit 0
