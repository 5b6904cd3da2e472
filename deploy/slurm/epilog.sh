#!/bin/sh
# Slurm Epilog (runs as root on the compute node): remove the job from every file of the
# job-mapping directory written by prolog.sh, and delete the files left empty. Every file
# is scanned, not only SLURM_JOB_GPUS, so a mapping is cleaned up even when that variable
# is missing. Never fails the job: errors are logged and the script exits 0.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
# Site settings (GPULEDGER_SERVER, GPULEDGER_TOKEN_FILE, GPULEDGER_JOB_MAPPING_DIR, ...): KEY=value lines.
conf=${GPULEDGER_SLURM_CONF:-/etc/gpuledger/slurm.env}
if [ -r "$conf" ]; then set -a; . "$conf"; set +a; fi
hook=${GPULEDGER_SLURM_HOOK:-$(dirname "$0")/gpuledger-slurm-hook}

# Tell the server (GPULEDGER_SERVER) the job ended, with Slurm's end time and state, and append
# the job's summary to its output file; at most 1 s, never fails.
notify() {
    if [ -n "${GPULEDGER_SERVER:-}" ] && [ -x "$hook" ]; then "$hook" end || log "job $job: $hook end failed"; fi
}

tag=gpuledger-epilog
dir=${GPULEDGER_JOB_MAPPING_DIR:-/var/lib/dcgm-exporter/job-mapping}
job=${SLURM_JOB_ID:-}

log() {
    echo "$tag: $*" >&2
    if command -v logger >/dev/null 2>&1; then logger -t "$tag" -p user.warning -- "$*" 2>/dev/null; fi
}

# Same lock as prolog.sh.
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
    '' | *[!0-9A-Za-z_.+-]*) log "SLURM_JOB_ID '$job' missing or invalid; nothing removed"; exit 0 ;;
esac
unmap() {
    [ -d "$dir" ] || return 0  # nothing was ever recorded on this node
    lock
    for file in "$dir"/*; do
        name=${file##*/}
        case $name in
            *[!0-9.]* | '' | .*) continue ;;  # only mapping files: "<gpu>" or "<gpu>.<gpu_instance>"
        esac
        [ -f "$file" ] && grep -qxF -- "$job" "$file" || continue
        tmp=$dir/.tmp.$name.$$
        grep -vxF -- "$job" "$file" >"$tmp"  # exit status 1 only means no line is left
        if [ "$?" -gt 1 ]; then
            log "job $job: cannot read $file"; rm -f "$tmp"
        elif [ -s "$tmp" ]; then
            mv -f "$tmp" "$file" || { log "job $job: cannot write $file"; rm -f "$tmp"; }
        else
            rm -f "$tmp" "$file" || log "job $job: cannot remove $file"
        fi
    done
    unlock
}

unmap
notify  # after unmap: the agent stops attributing the GPUs first
exit 0
