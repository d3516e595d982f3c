#!/usr/bin/env bash
# The docker-compose cluster test. Builds the static binary and the image, starts the
# three-node cluster of docker-compose.yml under a project name of its own, and checks that
#   1. the nodes found each other by mDNS (each node's `murmur peers`, FOUND BY column, and
#      the `peer connected ... discovery="mdns"` lines of the logs);
#   2. a write on node1 is read on node3, over their HTTP APIs published on 127.0.0.1;
#   3. node3 cut off the network (`docker network disconnect`) while both sides write comes
#      back, once reconnected, to the same /v1/digest as the others with every write present
#      (the time it takes is printed);
#   4. a write acknowledged just before its node is killed with SIGKILL survives the restart
#      and reaches the other nodes;
#   5. the fallback works: with mDNS off and the other services' names as static peers
#      (tests/cluster/static-peers.yml), the nodes connect through Docker's DNS and sync.
# Whatever happens, the clusters, their networks and volumes, the image and the temp dir are
# removed on exit. Timings are printed at the end.
#
# Needs: docker with `docker compose` or `docker-compose`, cargo, python3 (curl is used when
# present, python3 otherwise). Environment: CLUSTER_TIMEOUT (seconds per wait, default 90),
# CLUSTER_KEEP_IMAGE=1 (keep the image), CARGO_TARGET_DIR_STATIC (default target-static: the
# static build uses other RUSTFLAGS and would otherwise rebuild the normal target dir),
# CLUSTER_PARTITION_NEW_IP=1 (node3 comes back from the partition with a new address),
# CLUSTER_STRICT=0 (only warn, not fail, when the full mesh does not re-form after the
# partition or the restart within CLUSTER_MESH_TIMEOUT seconds, default 60).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

TIMEOUT=${CLUSTER_TIMEOUT:-90}
MAIN_PROJECT="murmur-ci-$$"
STATIC_PROJECT="murmur-ci-$$-static"
ISOLATED="murmur-ci-$$-isolated"
SQUATTER="murmur-ci-$$-squatter"
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
# The project and compose files `dc` works on (the static-peers phase changes them).
PROJECT=$MAIN_PROJECT
FILES=(-f "$ROOT/docker-compose.yml")
dc() { "${COMPOSE[@]}" "${FILES[@]}" -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM
  if [ "$rc" != 0 ] && [ -n "$(dc ps -q 2>/dev/null)" ]; then
    say "logs of $PROJECT (last 40 lines per node), because the test failed"
    dc logs --no-color --tail 40 2>&1
  fi
  say "tearing down the clusters, their networks and volumes"
  docker rm -f -v "$SQUATTER" >/dev/null 2>&1
  local p left
  for p in "$MAIN_PROJECT" "$STATIC_PROJECT"; do
    PROJECT=$p
    dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1
    # Whatever `down` left (it stops at the first error), by the project's label.
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$p")
    [ -z "$left" ] || docker rm -f -v $left >/dev/null
    left=$(docker network ls -q --filter "label=com.docker.compose.project=$p")
    [ -z "$left" ] || docker network rm $left >/dev/null
    left=$(docker volume ls -q --filter "label=com.docker.compose.project=$p")
    [ -z "$left" ] || docker volume rm $left >/dev/null
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$p")$(docker network ls -q --filter "label=com.docker.compose.project=$p")$(docker volume ls -q --filter "label=com.docker.compose.project=$p")
    [ -z "$left" ] || echo "warning: could not remove everything of compose project $p: remove it by hand"
  done
  docker network rm "$ISOLATED" >/dev/null 2>&1
  [ "${CLUSTER_KEEP_IMAGE:-0}" = 1 ] || docker rmi "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
  if [ "${#TIMING_ORDER[@]}" -gt 0 ]; then
    say "timings"
    local k
    for k in "${TIMING_ORDER[@]}"; do
      printf '  %-46s %s\n' "$k" "$(secs "${TIMINGS[$k]}")"
    done
    printf '  %-46s %s\n' "whole test" "$(secs $(($(now_ms) - T_START)))"
  fi
  if [ "$rc" = 0 ] && [ "${MESH_WARNINGS:-0}" -gt 0 ]; then
    echo "CLUSTER TEST PASSED, WITH $MESH_WARNINGS MESH WARNING(S): see the !!!!! lines above"
  elif [ "$rc" = 0 ]; then
    echo "CLUSTER TEST PASSED"
  else
    echo "CLUSTER TEST FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
# Name the command that stopped the script when it is not one of the checks (they say why).
trap 'echo "tests/cluster.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR
trap 'exit 130' INT TERM

# --- Helpers: HTTP over the published ports (curl when present, python3 otherwise). --------

# Each node's API token, by host port: the node writes it to /data/api.token on its first
# start; the test copies it out with `docker cp` (as a user of the host would).
declare -A TOKEN=()
fetch_tokens() {
  local n
  for n in 1 2 3; do
    docker cp "${CID[$n]}:/data/api.token" "$WORK/node$n.token" >/dev/null
    TOKEN[${PORTS[$n]}]=$(tr -d '[:space:]' <"$WORK/node$n.token")
  done
}

# http METHOD PORT PATH [JSON]: prints the body; fails on a connection error or a non-2xx.
if command -v curl >/dev/null 2>&1; then
  http() {
    local args=(-fsS --max-time 5 -X "$1" -H 'content-type: application/json'
      -H "authorization: Bearer ${TOKEN[$2]:-}")
    [ $# -ge 4 ] && args+=(--data "$4")
    curl "${args[@]}" "http://127.0.0.1:$2$3"
  }
else
  http() {
    python3 - "${TOKEN[$2]:-}" "$@" <<'PY'
import sys, urllib.request
token, method, port, path = sys.argv[1:5]
data = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                             headers={"content-type": "application/json",
                                      "authorization": f"Bearer {token}"})
with urllib.request.urlopen(req, timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
  }
fi

# json EXPR: evaluates a Python expression over the JSON document `j` read from stdin.
json() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"; }

# wait_for DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it succeeds; fails the test
# after CLUSTER_TIMEOUT seconds. Sets WAITED_MS.
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

declare -A CID=() # node number -> container id, in the current project
find_containers() {
  local n
  for n in 1 2 3; do
    CID[$n]=$(dc ps -q "node$n")
    [ -n "${CID[$n]}" ] || fail "no container for node$n in $PROJECT"
  done
}
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "${CID[$1]}")" = healthy ]; }
all_healthy() {
  local n
  for n in 1 2 3; do healthy "$n" || return 1; done
}
connected_peers() {
  http GET "${PORTS[$1]}" /v1/status | json 'sum(1 for p in j["peers"] if p.get("connected"))'
}
all_meshed() {
  local n
  for n in 1 2 3; do [ "$(connected_peers "$n")" = 2 ] || return 1; done
}
# How node N's connected peers were found, e.g. "mdns,mdns".
found_by() {
  http GET "${PORTS[$1]}" /v1/status |
    json '",".join(sorted(p.get("discovery") or "-" for p in j["peers"] if p.get("connected")))'
}
# After a disruption, every node must be connected to both others again: nodes redial the
# peers they found by mDNS every 3 s and close connections that stop answering pings (5 s
# interval, 10 s timeout). CLUSTER_STRICT=0 reports a mesh that does not re-form without
# failing.
check_mesh() { # WHAT
  local saved=$TIMEOUT
  TIMEOUT=${CLUSTER_MESH_TIMEOUT:-60}
  if (wait_for "full mesh after $1" all_meshed) 2>/dev/null; then
    TIMEOUT=$saved
    echo "full mesh again after $1"
    return
  fi
  TIMEOUT=$saved
  local n
  for n in 1 2 3; do echo "node$n connected to $(connected_peers "$n") of 2 peers"; done
  [ "${CLUSTER_STRICT:-1}" = 0 ] || fail "the mesh did not re-form within ${CLUSTER_MESH_TIMEOUT:-60}s after $1"
  echo "!!!!! WARNING: the mesh did not re-form within ${CLUSTER_MESH_TIMEOUT:-60}s after $1 (CLUSTER_STRICT=0: not failing) !!!!!"
  MESH_WARNINGS=$((MESH_WARNINGS + 1))
}
MESH_WARNINGS=0
show_peers() {
  local n
  for n in 1 2 3; do
    # As the README has it: no --api (the container's MURMUR_API, 0.0.0.0:7700, is reached
    # on loopback), no token option (read from the container's /data/api.token).
    echo "-- node$n: murmur peers (run in its container)"
    docker exec "${CID[$n]}" /murmur peers
  done
}

declare -A WRITES=() # uuid -> tag name, every write the nodes must end with
LAST=()               # node number -> its latest write during the partition
create_tag() { # NODE NAME: prints the new uuid
  http POST "${PORTS[$1]}" /v1/shared/tags "{\"name\": \"$2\", \"color\": \"node$1\"}" | json 'j["uuid"]'
}
has_tag() { # NODE UUID NAME (quiet: a 404 is an answer here)
  [ "$(http GET "${PORTS[$1]}" "/v1/shared/tags/$2" 2>/dev/null | json 'j["name"]' 2>/dev/null)" = "$3" ]
}
digest() { http GET "${PORTS[$1]}" /v1/digest | json 'j["digest"] + "  " + str(j["rows"]) + " rows"'; }
# Every node has the same digest and every write in WRITES. One python3 process per check, so
# that polling stays cheap on a loaded machine.
converged() {
  local u args=()
  for u in "${!WRITES[@]}"; do args+=("$u=${WRITES[$u]}"); done
  python3 - "${PORTS[1]}=${TOKEN[${PORTS[1]}]}" "${PORTS[2]}=${TOKEN[${PORTS[2]}]}" \
    "${PORTS[3]}=${TOKEN[${PORTS[3]}]}" "${args[@]}" <<'PY'
import json, sys, urllib.request
tokens = dict(a.split("=", 1) for a in sys.argv[1:4])
ports, writes = list(tokens), [w.split("=", 1) for w in sys.argv[4:]]
def get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"authorization": f"Bearer {tokens[port]}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
try:
    if len({get(p, "/v1/digest")["digest"] for p in ports}) != 1:
        sys.exit(1)
    for uuid, name in writes:
        for p in ports:
            if get(p, f"/v1/shared/tags/{uuid}").get("name") != name:
                sys.exit(1)
except Exception:
    sys.exit(1)
PY
}

# --- 0. A library key and free host ports. -------------------------------------------------

say "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')), project $PROJECT"
if command -v openssl >/dev/null 2>&1; then
  openssl rand -hex 32 >"$WORK/library.key"
else
  python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/library.key"
fi
# The secret stays readable by its owner only; the containers get it from the environment
# (MURMUR_LIBRARY_SECRET), not from a file mounted from the host.
chmod 600 "$WORK/library.key"
read -r P1 P2 P3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
PORTS=([1]=$P1 [2]=$P2 [3]=$P3)
MURMUR_LIBRARY_SECRET=$(tr -d '[:space:]' <"$WORK/library.key")
export MURMUR_IMAGE="$IMAGE" MURMUR_LIBRARY_SECRET MURMUR_LOG=info
export MURMUR_NODE1_PORT=$P1 MURMUR_NODE2_PORT=$P2 MURMUR_NODE3_PORT=$P3
echo "APIs: node1 127.0.0.1:$P1, node2 127.0.0.1:$P2, node3 127.0.0.1:$P3"

# --- 1. The static binary and the image. ---------------------------------------------------

say "building the static binary $BINARY"
t=$(now_ms)
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$STATIC_DIR" \
  cargo build --release --target "$TARGET" --bin murmur
timing "static binary build (cargo)" $(($(now_ms) - t))
# A static binary has no program interpreter (no PT_INTERP program header).
python3 - "$BINARY" <<'PY' || fail "$BINARY is not statically linked: the scratch image cannot run it"
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read(1 << 16)
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(1 if 3 in types else 0)
PY
echo "statically linked: yes"

say "building the image $IMAGE"
# BuildKit when buildx is installed, the classic builder otherwise (both work offline).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
t=$(now_ms)
docker build --build-arg BINARY="$BINARY" -t "$IMAGE" . 2>&1 |
  grep -v -E 'DEPRECATED|legacy builder|BuildKit|buildx|environment-variable|^ *$' || true
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "docker build did not produce $IMAGE"
timing "image build (docker build)" $(($(now_ms) - t))
docker image inspect -f 'image size: {{.Size}} bytes' "$IMAGE"

# --- 2. The cluster. -----------------------------------------------------------------------

say "starting the cluster ($PROJECT)"
t=$(now_ms)
dc up -d 2>&1
find_containers
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "${CID[3]}")
echo "network: $NET"
wait_for "every node healthy (docker healthcheck: murmur health)" all_healthy
timing "cluster up and healthy" $(($(now_ms) - t))
# The API listens on 0.0.0.0 in the container, and wants the token all the same.
code=$(python3 - "${PORTS[1]}" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/status", timeout=5)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)
PY
)
[ "$code" = 401 ] || fail "node1's API answered /v1/status without a token: $code"
echo "without its token, node1's API answers 401"
fetch_tokens
t=$(now_ms)
wait_for "every node connected to the two others" all_meshed
timing "mesh formed (every node sees 2 peers)" $(($(now_ms) - t))

# --- Membership: the init step made node1 the founder and named node2 and node3, which
# claimed their names (MURMUR_JOIN=named): all three are members on every node.
members_ok() {
  local n
  for n in 1 2 3; do
    http GET "${PORTS[$n]}" /v1/devices | python3 -c '
import json, sys
d = json.load(sys.stdin)
names = sorted(r["name"] for r in d["devices"] if r["state"] == "member")
sys.exit(0 if d["enforced"] and names == ["node1", "node2", "node3"] else 1)
' || return 1
  done
}
wait_for "node1, node2 and node3 members on every node (GET /v1/devices)" members_ok
echo "membership enforced; members: node1 (founder, by the init step), node2, node3 (named in advance)"

# --- 3. Discovery by mDNS. -----------------------------------------------------------------

say "discovery (no static peers are configured)"
show_peers
# No static peers are configured, so every connection was dialed by a node that had found
# the other by mDNS; the other side may see it as inbound when that dial came before its own
# mDNS answer (a race under load). Each connection must be "mdns" on at least one side.
STATUSES=$(for n in 1 2 3; do http GET "${PORTS[$n]}" /v1/status; echo; done)
verdict=$(python3 -c '
import json, sys
nodes = [json.loads(l) for l in sys.stdin if l.strip()]
seen = {}
for n in nodes:
    for p in n["peers"]:
        if p.get("connected"):
            seen[(n["peer_id"], p["peer_id"])] = p.get("discovery") or "-"
bad = []
for i, a in enumerate(nodes):
    for b in nodes[i + 1:]:
        ab, ba = seen.get((a["peer_id"], b["peer_id"])), seen.get((b["peer_id"], a["peer_id"]))
        if "mdns" not in (ab, ba) or not {ab, ba} <= {"mdns", "inbound"}:
            ida, idb = a["peer_id"][-6:], b["peer_id"][-6:]
            bad.append(f"{ida}<->{idb}: {ab}/{ba}")
print("; ".join(bad) or "ok")
' <<<"$STATUSES")
for n in 1 2 3; do echo "node$n found its peers by: $(found_by "$n")"; done
[ "$verdict" = ok ] || fail "connections not made by mDNS discovery: $verdict"
echo "-- the nodes' logs:"
LOGS=$(dc logs --no-color 2>&1)
grep 'murmur_node::sync: peer connected' <<<"$LOGS" |
  awk '{ d = a = ""; for (i = 1; i <= NF; i++) { if ($i ~ /^discovery=/) d = $i; if ($i ~ /^address=/) a = $i }
         print $1, "peer connected", a, d }'
grep -q 'peer connected.*discovery="mdns"' <<<"$LOGS" ||
  fail "no 'peer connected ... discovery=\"mdns\"' line in the logs"
echo "every connection was dialed after an mDNS discovery (mdns on at least one side)"

# --- 4. Write on node1, read on node3. -----------------------------------------------------

say "write on node1, read on node3"
u=$(create_tag 1 first-write-on-node1)
WRITES[$u]=first-write-on-node1
echo "node1 created tag $u"
wait_for "node3 reads tag $u" has_tag 3 "$u" first-write-on-node1
echo "node3 reads it $(secs "$WAITED_MS") later"
timing "write on node1 readable on node3" "$WAITED_MS"

# --- 5. Partition node3, write on both sides, reconnect. -----------------------------------

say "partition: disconnecting node3 from $NET"
# A container cut off from its only network loses its published port. To keep writing to
# node3 over its API, the test attaches it to a network of its own meanwhile (Docker then
# publishes the port there); no other node is on that network.
docker network create "$ISOLATED" >/dev/null
docker network disconnect "$NET" "${CID[3]}"
docker network connect "$ISOLATED" "${CID[3]}"
if [ "${CLUSTER_PARTITION_NEW_IP:-0}" = 1 ]; then
  # Opt-in: another container takes node3's address meanwhile, so node3 comes back with a
  # new one (like a laptop that changes networks) and its old connections are dead.
  docker run -d --name "$SQUATTER" --network "$NET" "$IMAGE" run --no-mdns >/dev/null
  echo "node3's old address is now $SQUATTER's: $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$SQUATTER")"
fi
wait_for "node3's API published again" http GET "${PORTS[3]}" /v1/health
for i in 1 2 3; do
  for n in 1 2 3; do
    u=$(create_tag "$n" "partition-node$n-$i")
    WRITES[$u]=partition-node$n-$i
    LAST[$n]=$u
  done
done
echo "wrote 3 tags on each node, node3 alone on its side"
wait_for "node2 reads node1's partition-node1-3" has_tag 2 "${LAST[1]}" partition-node1-3
if has_tag 1 "${LAST[3]}" partition-node3-3; then fail "node1 has a write of the cut-off node3"; fi
if has_tag 3 "${LAST[1]}" partition-node1-3; then fail "the cut-off node3 has a write of node1"; fi
echo "node1: $(digest 1)"
echo "node3: $(digest 3)   (differs while node3 is cut off)"

say "reconnecting node3"
docker network disconnect "$ISOLATED" "${CID[3]}"
# Reconnecting drops the compose aliases: give back the service name (for /dns4 peers).
docker network connect --alias node3 "$NET" "${CID[3]}"
t=$(now_ms)
echo "node3 is back on $NET at $(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "${CID[3]}")"
wait_for "same digest on every node and all ${#WRITES[@]} writes everywhere, after the partition" converged
CONVERGE_MS=$(($(now_ms) - t))
timing "node3 convergence after reconnect" "$CONVERGE_MS"
echo "node3 converged $(secs "$CONVERGE_MS") after it was reconnected: $(digest 3)"
check_mesh "the partition"

# --- 6. SIGKILL right after an acknowledged write. -----------------------------------------

say "crash: SIGKILL node2 right after an acknowledged write"
u=$(create_tag 2 written-before-sigkill)
WRITES[$u]=written-before-sigkill
KILLED_AT=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
docker kill -s KILL "${CID[2]}" >/dev/null
echo "node2 acknowledged tag $u, then got SIGKILL"
t=$(now_ms)
# The restart policy may be restarting it already; `docker start` is then a no-op.
docker start "${CID[2]}" >/dev/null
wait_for "node2's API answering after the restart" http GET "${PORTS[2]}" /v1/health
echo "node2 answers again $(secs $(($(now_ms) - t))) after the kill (started at $(docker inspect -f '{{.State.StartedAt}}' "${CID[2]}"))"
has_tag 2 "$u" written-before-sigkill || fail "node2 lost the write it acknowledged before SIGKILL"
echo "the write survived on node2"
wait_for "the pre-crash write on every node, same digests" converged
timing "convergence after SIGKILL + restart" $(($(now_ms) - t))
echo "it reached node1 and node3; every digest agrees $(secs $(($(now_ms) - t))) after the kill"
echo "-- how the nodes reconnected (logs since the kill):"
for n in 1 2 3; do
  docker logs --since "$KILLED_AT" "${CID[$n]}" 2>&1 |
    grep -E 'murmur_node::sync: (peer (dis)?connected|caught up)' |
    sed -E "s/^([^ ]+) +INFO sync\{[^}]*\}: murmur_node::sync:/node$n \1/; s/ client=[^ ]+//; s/peer_id=([^ ]{12})[^ ]*/peer_id=\1…/" ||
    true # a node with nothing to report is an answer too
done
check_mesh "node2's restart"
wait_for "node2 healthy again (docker healthcheck)" healthy 2

say "final digests"
for n in 1 2 3; do echo "node$n: $(digest "$n")"; done
echo "${#WRITES[@]} writes, every one on every node"

# --- 7. The fallback: static peers by service name, no mDNS. -------------------------------

say "fallback: mDNS off, the other services' names as static peers (tests/cluster/static-peers.yml)"
docker rm -f -v "$SQUATTER" >/dev/null 2>&1 || true
dc down -v --timeout 5 >/dev/null 2>&1 || echo "warning: '${COMPOSE[*]} down' of $PROJECT failed; the exit trap retries"
PROJECT=$STATIC_PROJECT
FILES=(-f "$ROOT/docker-compose.yml" -f "$ROOT/tests/cluster/static-peers.yml")
t=$(now_ms)
dc up -d 2>&1
find_containers
wait_for "every node healthy" all_healthy
fetch_tokens
wait_for "every node connected to the two others through /dns4 peers" all_meshed
timing "static-peers cluster up and meshed" $(($(now_ms) - t))
show_peers
for n in 1 2 3; do
  found=$(found_by "$n")
  case ",$found," in
    *,mdns,* | *,-,*) fail "node$n: peers found by '$found' with mDNS off" ;;
  esac
done
WRITES=()
u=$(create_tag 1 static-peers-write)
WRITES[$u]=static-peers-write
wait_for "the write on node1 on every node" converged
echo "connections are configured/inbound only (Docker's DNS resolved the service names); a write on node1 reached every node"
