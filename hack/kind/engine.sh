#!/usr/bin/env bash
# Starts and stops a Docker engine for the kind tier, with container egress blocked first.
#
#   hack/kind/engine.sh up      # install docker.io if missing (root, Debian), start dockerd, block egress
#   hack/kind/engine.sh block   # block egress from every Docker bridge that exists now (run after
#                               # creating a network, before starting a container on it)
#   hack/kind/engine.sh down    # stop the dockerd this script started (by its pid), nothing else
#
# An engine that already answers `docker info` (Docker Desktop, a system service) is used as it
# is: `up` only blocks egress on its bridges, and `down` leaves it running.
#
# Nothing may be pulled: this tier builds every image it runs. Two guards make an accidental
# pull fail here instead of sending traffic out:
#   - dockerd runs with its HTTP(S) proxy pointing at a closed local port, so a pull it is asked
#     for dies on 127.0.0.1:9;
#   - each Docker bridge gets `DOCKER-USER -i <bridge> ! -o <bridge> -j DROP`, so containers
#     reach each other and the host, never beyond.
#
# Some VMs (Firecracker here) lack capabilities in the bounding set that Docker 20.10 hands
# every --privileged container (CAP_SYS_RESOURCE); runc then fails with "operation not
# permitted". Only there, dockerd gets a runtime "egpu-runc" (hack/kind/runc_wrapper.py) that
# drops the capabilities the host does not have, and it is made the default.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${EGPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/egpu-operator}"
state="$cache/engine"
pidfile="$state/dockerd.pid"

log() { printf '[engine] %s\n' "$*" >&2; }

# Bridges Docker made: docker0 and one br-<network id> per user network.
bridges() {
  ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(docker0|br-[0-9a-f]{12})$' || true
}

block_bridge() { # <bridge>
  local bridge=$1 tool
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    "$tool" -N DOCKER-USER 2>/dev/null || true
    if ! "$tool" -C DOCKER-USER -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null; then
      "$tool" -I DOCKER-USER -i "$bridge" ! -o "$bridge" -j DROP
    fi
  done
  log "egress blocked from $bridge"
}

block() {
  local bridge
  command -v iptables >/dev/null || { log "iptables is missing: cannot block container egress, refusing to go on"; exit 1; }
  for bridge in $(bridges); do block_bridge "$bridge"; done
}

# Capabilities in this host's bounding set; the wrapper is needed when Docker's privileged set
# (every capability the engine knows, up to CAP_CHECKPOINT_RESTORE = 40) is not all there.
missing_capabilities() {
  local bnd last=40 cap
  bnd=$((16#$(awk '/^CapBnd/ {print $2}' /proc/self/status)))
  for cap in $(seq 0 "$last"); do
    if (( (bnd >> cap & 1) == 0 )); then printf '%s ' "$cap"; fi
  done
}

# The engine, iptables, and mmdebstrap for the images' root filesystems (hack/images/base.sh,
# hack/kind/node-image.sh), from Debian's packages.
install_engine() {
  command -v dockerd >/dev/null && command -v iptables >/dev/null && command -v mmdebstrap >/dev/null && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "dockerd, iptables or mmdebstrap is not installed: install them and run this again"
    exit 1
  fi
  log "installing docker.io, iptables and mmdebstrap from Debian (first run on this machine)"
  DEBIAN_FRONTEND=noninteractive apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io iptables mmdebstrap >&2
}

up() {
  if docker info >/dev/null 2>&1; then
    log "using the running Docker engine"
    block
    return
  fi
  install_engine
  mkdir -p "$state"
  local args=(--host unix:///var/run/docker.sock --pidfile "$pidfile" --storage-driver overlay2)
  # cgroup v1 hosts without systemd as init: let dockerd manage cgroups itself.
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && [ ! -d /run/systemd/system ]; then
    args+=(--exec-opt native.cgroupdriver=cgroupfs)
  fi
  local missing
  missing=$(missing_capabilities)
  if [ -n "$missing" ]; then
    log "this host lacks capabilities ($missing): runc gets a wrapper that drops them"
    args+=(--add-runtime "egpu-runc=$here/runc_wrapper.py" --default-runtime egpu-runc)
  fi
  log "starting dockerd (log: $state/dockerd.log)"
  # The proxy is a closed local port: a pull fails here instead of leaving the machine.
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY='' \
    setsid dockerd "${args[@]}" >"$state/dockerd.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then log "dockerd did not answer within 60 s; see $state/dockerd.log"; exit 1; fi
    sleep 1
  done
  block
  log "dockerd $(docker version -f '{{.Server.Version}}') up (pid $(cat "$pidfile"))"
}

down() {
  if [ ! -s "$pidfile" ]; then
    log "no dockerd started by this script"
    forget_gone_bridges
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      if (( SECONDS > deadline )); then log "dockerd (pid $pid) did not stop within 60 s"; exit 1; fi
      sleep 1
    done
  fi
  rm -f "$pidfile"
  # dockerd leaves its default bridge behind; it makes a new one when it starts.
  ip link delete docker0 2>/dev/null || true
  forget_gone_bridges
}

# Drops the egress rules of bridges that no longer exist (a deleted kind network), so they do
# not pile up run after run; a bridge made again gets its rule again before it is used.
forget_gone_bridges() {
  local tool bridge
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    for bridge in $("$tool" -S DOCKER-USER 2>/dev/null | awk '$1 == "-A" && $3 == "-i" && $NF == "DROP" {print $4}'); do
      ip link show "$bridge" >/dev/null 2>&1 || "$tool" -D DOCKER-USER -i "$bridge" ! -o "$bridge" -j DROP
    done
  done
}

case "${1:-}" in
  up) up ;;
  block) block ;;
  down) down ;;
  *) echo "usage: hack/kind/engine.sh up|block|down" >&2; exit 2 ;;
esac
