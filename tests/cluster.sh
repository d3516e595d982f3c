#!/usr/bin/env bash
# The docker-compose cluster test: builds the static binary and the image, starts the
# three-node cluster of docker-compose.yml, and checks that
#   1. a write on node 1 is read on node 3 (over their HTTP APIs, published on 127.0.0.1);
#   2. the peers found each other by mDNS (each node's `murmur peers` "FOUND BY" column);
#   3. after node 3 is cut off the network (`docker network disconnect`) and writes land on
#      both sides, reconnecting it brings every node to the same /v1/digest with every write
#      present (the time node 3 takes to converge is printed);
#   4. a write acknowledged just before its node is killed with SIGKILL survives the restart
#      and reaches the other nodes.
# The cluster, its network and volumes, the image and the temp dir are removed on exit,
# whatever happened. Needs docker with `docker compose` or `docker-compose`, cargo, python3
# (curl is used when present). Timings are printed at the end.
#
# Environment: CLUSTER_TIMEOUT (seconds per wait, default 90), CLUSTER_KEEP_IMAGE=1 keeps the
# image murmur:cluster-test, CARGO_TARGET_DIR_STATIC (default target-static: a static build
# uses other RUSTFLAGS and would otherwise rebuild the normal target dir).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

TIMEOUT=${CLUSTER_TIMEOUT:-90}
PROJECT="murmur-ci-$$"
IMAGE="murmur:cluster-test-$$"
TARGET="x86_64-unknown-linux-gnu"
STATIC_DIR=${CARGO_TARGET_DIR_STATIC:-target-static}
BINARY="$STATIC_DIR/$TARGET/release/murmur"
WORK=$(mktemp -d)

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }
say() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\nCLUSTER TEST FAILED: %s\n' "$*" >&2
  exit 1
}

T_START=$(now_ms)
declare -A TIMINGS=()
TIMING_ORDER=()
timing() {
  TIMINGS[$1]=$2
  TIMING_ORDER+=("$1")
}

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
dc() { "${COMPOSE[@]}" -f "$ROOT/docker-compose.yml" -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ] && [ -n "$(dc ps -q 2>/dev/null)" ]; then
    say "logs (last 40 lines per node), because the test failed"
    dc logs --no-color --tail 40 2>&1
  fi
  say "tearing down the cluster, its network and volumes"
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || echo "warning: '${COMPOSE[*]} down -v' failed; remove project $PROJECT by hand"
  [ "${CLUSTER_KEEP_IMAGE:-0}" = 1 ] || docker rmi "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
  if [ "${#TIMING_ORDER[@]}" -gt 0 ]; then
    say "timings"
    local k
    for k in "${TIMING_ORDER[@]}"; do
      printf '  %-44s %s\n' "$k" "$(secs "${TIMINGS[$k]}")"
    done
    printf '  %-44s %s\n' "whole test" "$(secs $(($(now_ms) - T_START)))"
  fi
  if [ "$rc" = 0 ]; then echo "CLUSTER TEST PASSED"; else echo "CLUSTER TEST FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- HTTP over the published ports: curl when present, python3 otherwise. -----------------

# http METHOD PORT PATH [JSON]: prints the body; fails on a connection error or a non-2xx.
if command -v curl >/dev/null 2>&1; then
  http() {
    local args=(-fsS --max-time 5 -X "$1" -H 'content-type: application/json')
    [ $# -ge 4 ] && args+=(--data "$4")
    curl "${args[@]}" "http://127.0.0.1:$2$3"
  }
else
  http() {
    python3 - "$@" <<'PY'
import sys, urllib.request
method, port, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
  }
fi

# json EXPR: evaluates a Python expression over the JSON document `j` read from stdin.
json() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"; }

# wait_for DESCRIPTION COMMAND...: retries COMMAND every 0.2 s until it succeeds or the
# deadline passes; sets WAITED_MS.
wait_for() {
  local what=$1
  shift
  local start deadline
  start=$(now_ms)
  deadline=$((start + TIMEOUT * 1000))
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for: $what"
    sleep 0.2
  done
  WAITED_MS=$(($(now_ms) - start))
}

# --- 0. Setup: a library key, free host ports. -------------------------------------------

say "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || true)); project $PROJECT"
if command -v openssl >/dev/null 2>&1; then
  openssl rand -hex 32 >"$WORK/library.key"
else
  python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/library.key"
fi
# The containers run as uid 10001: the bind-mounted key file must be readable by it.
chmod 644 "$WORK/library.key"
read -r P1 P2 P3 < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
PORTS=([1]=$P1 [2]=$P2 [3]=$P3)
export MURMUR_IMAGE="$IMAGE" MURMUR_LIBRARY_KEY="$WORK/library.key"
export MURMUR_NODE1_PORT=$P1 MURMUR_NODE2_PORT=$P2 MURMUR_NODE3_PORT=$P3
# Discovery by mDNS only: no static peers, whatever the caller's environment says.
export MURMUR_STATIC_PEERS="" MURMUR_NO_MDNS=false MURMUR_LOG=info
echo "APIs: node1 127.0.0.1:$P1, node2 127.0.0.1:$P2, node3 127.0.0.1:$P3"

# --- 1. Build the static binary and the image. ---------------------------------------------

say "building the static binary ($BINARY)"
t=$(now_ms)
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$STATIC_DIR" \
  cargo build --release --locked --target "$TARGET" --bin murmur
timing "static binary build (cargo)" $(($(now_ms) - t))
if command -v file >/dev/null 2>&1; then file -b "$BINARY"; fi
# A static binary has no program interpreter (PT_INTERP): check the ELF header directly.
python3 - "$BINARY" <<'PY' || fail "$BINARY is not statically linked: the scratch image cannot run it"
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read()
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(1 if 3 in types else 0)  # 3 = PT_INTERP
PY

say "building the image $IMAGE"
t=$(now_ms)
DOCKER_BUILDKIT=0 docker build --build-arg BINARY="$BINARY" -t "$IMAGE" . 2>&1 |
  grep -v -i -E 'deprecated|buildkit|buildx|install the buildx|^ *$' || true
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "docker build did not produce $IMAGE"
timing "image build (docker build)" $(($(now_ms) - t))
docker image inspect -f 'image size: {{.Size}} bytes' "$IMAGE"

# --- 2. Start the cluster. -----------------------------------------------------------------

say "starting the cluster"
t=$(now_ms)
dc up -d 2>&1
cid() { dc ps -q "node$1"; }
declare -A CID=()
for n in 1 2 3; do
  CID[$n]=$(cid "$n")
  [ -n "${CID[$n]}" ] || fail "no container for node$n"
done
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "${CID[3]}")
echo "network: $NET"

healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "${CID[$1]}")" = healthy ]; }
for n in 1 2 3; do wait_for "node$n healthy (docker healthcheck)" healthy "$n"; done
timing "cluster up and healthy" $(($(now_ms) - t))

connected_peers() {
  http GET "${PORTS[$1]}" /v1/status | json 'sum(1 for p in j["peers"] if p.get("connected"))'
}
all_meshed() {
  local n
  for n in 1 2 3; do [ "$(connected_peers "$n")" = 2 ] || return 1; done
}
t=$(now_ms)
wait_for "every node connected to the two others" all_meshed
timing "mesh formed (every node sees 2 peers)" $(($(now_ms) - t))

# --- 3. Discovery by mDNS. -----------------------------------------------------------------

say "discovery: each node's 'murmur peers' (run inside its container)"
for n in 1 2 3; do
  echo "-- node$n"
  docker exec "${CID[$n]}" /murmur peers --api 127.0.0.1:7700
done
for n in 1 2 3; do
  found=$(http GET "${PORTS[$n]}" /v1/status |
    json '",".join(sorted(p.get("discovery") or "-" for p in j["peers"] if p.get("connected")))')
  [ "$found" = "mdns,mdns" ] || fail "node$n found its peers by '$found', expected mdns for both"
done
echo "every connection was made after an mDNS discovery (no static peers were configured)"
echo "-- node logs:"
dc logs --no-color 2>&1 | grep 'peer connected' | sed -E 's/^([^|]*\|).*(peer_id=[^ ]{0,20})[^ ]* (address=[^ ]*) (discovery=[^ ]*).*/\1 peer connected \2… \3 \4/'
dc logs --no-color 2>&1 | grep -q 'discovery="mdns"\|discovery=mdns' ||
  fail "no 'peer connected ... discovery=mdns' line in the logs"

# --- 4. Write on node 1, read on node 3. ---------------------------------------------------

create_tag() { # NODE NAME -> uuid
  http POST "${PORTS[$1]}" /v1/shared/tags "{\"name\": \"$2\", \"color\": \"node$1\"}" | json 'j["uuid"]'
}
has_tag() { # NODE UUID NAME
  [ "$(http GET "${PORTS[$1]}" "/v1/shared/tags/$2" | json 'j["name"]')" = "$3" ]
}
digest() { http GET "${PORTS[$1]}" /v1/digest | json 'j["digest"] + " " + str(j["rows"])'; }

declare -A WRITES=() # uuid -> name
say "write on node1, read on node3"
u=$(create_tag 1 first-write-on-node1)
WRITES[$u]=first-write-on-node1
echo "node1 created tag $u"
wait_for "node3 reads tag $u" has_tag 3 "$u" first-write-on-node1
echo "node3 reads it after $(secs "$WAITED_MS")"
timing "write on node1 readable on node3" "$WAITED_MS"

# --- 5. Partition node 3, write on both sides, heal. ---------------------------------------

say "partition: disconnecting node3 from $NET"
docker network disconnect "$NET" "${CID[3]}"
for i in 1 2 3; do
  u=$(create_tag 1 "partition-node1-$i")
  WRITES[$u]=partition-node1-$i
  u=$(create_tag 2 "partition-node2-$i")
  WRITES[$u]=partition-node2-$i
  u=$(create_tag 3 "partition-node3-$i")
  WRITES[$u]=partition-node3-$i
  ISOLATED_U=$u
done
echo "wrote 6 tags on node1/node2 and 3 on the isolated node3"
# node3's writes cannot have left it.
if has_tag 1 "$ISOLATED_U" partition-node3-3; then fail "node1 has a write of the isolated node3"; fi
echo "node3: $(digest 3)   node1: $(digest 1)   (they differ while node3 is cut off)"

say "healing: reconnecting node3"
# Reconnecting drops the compose aliases: give back the service name (for /dns4 peers).
docker network connect --alias node3 "$NET" "${CID[3]}"
t=$(now_ms)
converged() {
  local n u d1 d
  d1=$(digest 1) || return 1
  for n in 2 3; do
    d=$(digest "$n") || return 1
    [ "$d" = "$d1" ] || return 1
  done
  for u in "${!WRITES[@]}"; do
    for n in 1 2 3; do has_tag "$n" "$u" "${WRITES[$u]}" || return 1; done
  done
}
wait_for "every node with the same digest and all ${#WRITES[@]} writes after the partition" converged
CONVERGE_MS=$(($(now_ms) - t))
timing "node3 convergence after reconnect" "$CONVERGE_MS"
echo "node3 converged $(secs "$CONVERGE_MS") after it was reconnected: digest $(digest 3)"

# --- 6. SIGKILL right after an acknowledged write. -----------------------------------------

say "crash: SIGKILL node2 right after an acknowledged write"
u=$(create_tag 2 written-before-sigkill)
WRITES[$u]=written-before-sigkill
docker kill -s KILL "${CID[2]}" >/dev/null
echo "node2 acknowledged tag $u and was killed"
t=$(now_ms)
# The restart policy may already be restarting it; `docker start` is then a no-op.
docker start "${CID[2]}" >/dev/null
wait_for "node2 healthy again after SIGKILL" healthy 2
echo "node2 restarted and healthy after $(secs $(($(now_ms) - t)))"
has_tag 2 "$u" written-before-sigkill || fail "node2 lost the write it acknowledged before SIGKILL"
echo "the write survived on node2"
wait_for "the pre-crash write on every node, same digests" converged
echo "it reached node1 and node3; digests agree $(secs $(($(now_ms) - t))) after the restart"
timing "convergence after SIGKILL + restart" $(($(now_ms) - t))

# --- 7. Final state. -----------------------------------------------------------------------

say "final digests"
for n in 1 2 3; do echo "node$n: $(digest "$n")"; done
echo "${#WRITES[@]} writes, present on every node"
