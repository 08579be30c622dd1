#!/usr/bin/env bash
# Container services the docker/podman/chroot environments and their tests need.
#
#   eval "$(scripts/services.sh start)"   install docker.io, podman, runc if missing (root),
#                                        start a dockerd of memgap's own, write podman's
#                                        containers.conf; prints the `export` lines to use them
#   scripts/services.sh env              print those `export` lines again
#   scripts/services.sh stop             stop that dockerd (by its saved PID)
#   scripts/services.sh status           say what runs
#
# dockerd gets its own folders (MEMGAP_SERVICES_DIR, default /tmp/memgap-services) and
# touches no networking: no iptables rules, no bridge (runs use --network host or none).
# The data root lives under /var/lib so that images survive between test runs.
# Podman's default runtime (crun) refuses hybrid cgroup v1 layouts and podman writes
# rlimits above the host's hard limits into every container; the config file fixes both
# (notes/containers.md). Log lines go to stderr; stdout carries only `export` lines.
set -euo pipefail

DIR=${MEMGAP_SERVICES_DIR:-/tmp/memgap-services}
DATA=${MEMGAP_DOCKER_DATA:-/var/lib/memgap-dockerd}
SOCK=$DIR/docker.sock
PIDFILE=$DIR/dockerd.pid
CONF=$DIR/containers.conf

log() { printf 'services: %s\n' "$*" >&2; }

print_env() {
    echo "export DOCKER_HOST=unix://$SOCK"
    echo "export CONTAINERS_CONF=$CONF"
}

install_packages() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker >/dev/null || need+=(docker.io)
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    command -v chroot >/dev/null || need+=(coreutils)
    command -v unshare >/dev/null || need+=(util-linux)
    ((${#need[@]})) || return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing ${need[*]}: run as root, or install them"; return 1
    fi
    log "installing ${need[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${need[@]}" | sort -u) >&2
}

write_podman_conf() {
    mkdir -p "$DIR"
    cat >"$CONF.tmp" <<'EOF'
# Written by memgap's scripts/services.sh (notes/containers.md).
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    mv "$CONF.tmp" "$CONF"
}

dockerd_alive() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

docker_answers() {
    DOCKER_HOST=unix://$SOCK timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start_dockerd() {
    mkdir -p "$DIR" "$DATA"
    if dockerd_alive && docker_answers; then
        log "dockerd already running (pid $(cat "$PIDFILE"))"; return 0
    fi
    if dockerd_alive; then
        log "dockerd (pid $(cat "$PIDFILE")) does not answer; restarting it"
        stop_dockerd
    fi
    rm -f "$SOCK" "$PIDFILE"
    # setsid: the daemon must outlive this script and not get the terminal's Ctrl-C.
    setsid dockerd \
        --data-root "$DATA" \
        --exec-root "$DIR/exec" \
        --pidfile "$PIDFILE" \
        -H "unix://$SOCK" \
        --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=vfs \
        >"$DIR/dockerd.log" 2>&1 </dev/null &
    local i
    for i in $(seq 1 100); do
        if docker_answers; then
            log "dockerd ready (pid $(cat "$PIDFILE"), socket $SOCK)"; return 0
        fi
        sleep 0.2
    done
    log "dockerd did not answer within 20 s; its log:"; tail -n 20 "$DIR/dockerd.log" >&2 || true
    return 1
}

stop_dockerd() {
    [ -f "$PIDFILE" ] || { unmount_leftovers; log "dockerd not running"; return 0; }
    local pid; pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        local i
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd (pid $pid) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$pid" || true
        fi
    fi
    rm -f "$PIDFILE" "$SOCK"
    unmount_leftovers
    log "dockerd stopped"
}

unmount_leftovers() {
    # dockerd leaves its default network namespace bind-mounted under its exec root.
    local m
    for m in $(awk -v a="$DIR/" -v b="$DATA" '{ if (index($5, a) == 1 || index($5, b) == 1) print $5 }' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
}

case "${1:-start}" in
    start)
        install_packages
        write_podman_conf
        start_dockerd
        print_env
        ;;
    env) print_env ;;
    stop) stop_dockerd ;;
    status)
        if dockerd_alive && docker_answers; then log "dockerd running (pid $(cat "$PIDFILE"))"; else log "dockerd not running"; fi
        [ -f "$CONF" ] && log "podman config $CONF" || log "podman config not written"
        ;;
    *) log "usage: $0 start|env|stop|status"; exit 2 ;;
esac
