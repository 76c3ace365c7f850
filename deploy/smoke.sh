#!/usr/bin/env bash
# Build the image and run the compose stack for real, then tear it all down.
#
#   bash deploy/smoke.sh          (as root; .ci/run calls it after the tests)
#
# 1. tools    docker.io, mmdebstrap and the compose v2 plugin, installed if missing
# 2. engine   dockerd started if none answers (and stopped at the end only if started here)
# 3. bases    local stand-ins for the registry images (python, redis, nginx), built with
#             mmdebstrap from the machine's Debian sources; cached by a hash of their recipe.
#             Set PYTHON_IMAGE, REDIS_IMAGE and NGINX_IMAGE to use other images instead
#             (e.g. the official ones, where a registry is reachable): nothing is built then.
# 4. image    the shipped Dockerfile, unchanged, FROM $PYTHON_IMAGE
# 5. demo     `--demo` hardened like the k8s pod (read-only root, no capabilities): non-root,
#             /healthz, /readyz, one stream to [DONE], SIGTERM -> exit 0
# 6. compose  compose.yaml as shipped: all services healthy, the README's curl through nginx,
#             N+10 requests in one window for the demo key's N/minute -> exactly N x 200 and
#             10 x 429, answered by both replicas; redis SIGKILLed and started again on its
#             volume keeps the month's usage; SIGTERM -> the gateways exit 0
# Everything it starts (its containers, its compose project's networks and volumes, dockerd
# if it started it) is removed on exit; images are kept as the next run's cache.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PROJECT=grok-gateway-smoke # compose project name: its containers, networks, volumes
DEMO=grok-gateway-smoke-demo
IMAGE=${GATEWAY_IMAGE:-grok-gateway:smoke}
BASE_REPO=grok-gateway-smoke # local base images: $BASE_REPO/{python,redis,nginx}:<recipe hash>
COMPOSE_KEY=gk-compose-demo-key-not-for-production
export DOCKER_BUILDKIT=0 # the classic builder: BuildKit would try to pull its frontend
export DEBIAN_FRONTEND=noninteractive

T0=$SECONDS
PHASE="" PHASE_T0=$SECONDS
declare -a TIMES=()
DOCKERD_PID="" WORK="" COMPOSE_UP=""

log() { printf 'smoke: %s\n' "$*"; }
die() {
  printf 'smoke: FAILED in %s: %s\n' "${PHASE:-setup}" "$*" >&2
  exit 1
}
phase() {
  end_phase
  PHASE=$1 PHASE_T0=$SECONDS
  log "== $PHASE"
}
end_phase() {
  if [[ -n $PHASE ]]; then
    TIMES+=("$(printf '%-8s %4ss' "$PHASE" $((SECONDS - PHASE_T0)))")
    log "   $PHASE done in $((SECONDS - PHASE_T0))s"
  fi
  PHASE=""
}

dc() { docker compose -p "$PROJECT" -f "$REPO/compose.yaml" "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if ((rc != 0)); then
    if docker inspect "$DEMO" >/dev/null 2>&1; then
      log "demo container logs (last 30 lines):"
      docker logs --tail 30 "$DEMO" 2>&1 | sed 's/^/  | /'
    fi
    if [[ -n $COMPOSE_UP ]]; then
      log "compose state and logs (last 20 lines per service):"
      dc ps -a 2>&1 | sed 's/^/  | /'
      dc logs --no-color --tail 20 2>&1 | sed 's/^/  | /'
    fi
  fi
  PHASE=teardown PHASE_T0=$SECONDS
  if docker info >/dev/null 2>&1; then
    docker rm -f "$DEMO" >/dev/null 2>&1
    [[ -n $COMPOSE_UP ]] && dc down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  fi
  if [[ -n $DOCKERD_PID ]]; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  [[ -n $WORK ]] && rm -rf "$WORK"
  end_phase
  log "phase times:"
  printf '  %s\n' "${TIMES[@]}"
  if ((rc == 0)); then
    log "OK in $((SECONDS - T0))s"
  else
    log "FAILED (exit $rc) after $((SECONDS - T0))s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

((EUID == 0)) || die "run as root (installs packages, starts dockerd)"
exec 9>/run/grok-gateway-smoke.lock
flock -w 600 9 || die "another deploy/smoke.sh holds /run/grok-gateway-smoke.lock"
WORK=$(mktemp -d /var/tmp/grok-gateway-smoke.XXXXXX)

# ---------------------------------------------------------------------------------------------
phase tools

# shellcheck source=/dev/null
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n $SUITE ]] || die "not a Debian machine (no VERSION_CODENAME in /etc/os-release)"
# The machine's own Debian sources for its release as apt is configured, as `deb URI SUITE
# main` lines: SUITE, SUITE-updates, SUITE-security (never a host name of our own).
debian_sources() {
  # shellcheck disable=SC2016 # apt's own $(FIELD) placeholders
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' \
    | awk -v s="$SUITE" '$3 == "main" && $1 ~ /^https?:/ && ($2 == s || $2 == s "-updates" || $2 == s "-security") {
        print "deb " $1 " " $2 " main" }' | sort -u
}

apt_install() {
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  # No init system starts dockerd here: keep the package scripts from trying (this run
  # starts and stops its own), without leaving a policy-rc.d behind.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    apt_install "${need[@]}" || { rm -f /usr/sbin/policy-rc.d; die "apt-get install ${need[*]}"; }
    rm -f /usr/sbin/policy-rc.d
  else
    apt_install "${need[@]}" || die "apt-get install ${need[*]}"
  fi
fi
command -v docker >/dev/null || die "no docker client after installing docker.io"

mapfile -t SOURCES < <(debian_sources)
((${#SOURCES[@]})) || { apt-get update -qq && mapfile -t SOURCES < <(debian_sources); }
MIRROR=$(printf '%s\n' "${SOURCES[@]}" | awk -v s="$SUITE" '$3 == s {print $2; exit}')
[[ -n $MIRROR ]] || die "no Debian mirror for $SUITE main in the apt configuration"

# Compose v2 is not in bookworm (its docker-compose is v1, which rejects compose.yaml's
# `name:`). trixie's docker-compose package is a static binary that works as a CLI plugin:
# fetch that .deb through a private apt configuration (the machine's sources stay as they are).
if ! docker compose version >/dev/null 2>&1; then
  log "installing the compose plugin from Debian trixie's docker-compose package"
  apt_dir=$WORK/apt-trixie
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" \
    >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives"
    -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -qq >/dev/null || die "apt-get update (trixie, private lists)"
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download docker-compose >/dev/null) \
    || die "apt-get download docker-compose (trixie)"
  dpkg-deb -x "$apt_dir"/docker-compose_*.deb "$apt_dir/x"
  plugin=$apt_dir/x/usr/libexec/docker/cli-plugins/docker-compose
  [[ -f $plugin ]] || die "no cli-plugins/docker-compose in trixie's docker-compose package"
  install -D -m 755 "$plugin" /usr/local/lib/docker/cli-plugins/docker-compose
  docker compose version >/dev/null 2>&1 || die "the compose plugin does not run"
fi
log "$(docker --version); $(docker compose version)"

# ---------------------------------------------------------------------------------------------
phase engine

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $WORK/dockerd.log)"
  dockerd >"$WORK/dockerd.log" 2>&1 9>&- &
  DOCKERD_PID=$!
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd exited"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd did not answer in 60s"; }
fi
log "engine $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}')"
# Leftovers of an interrupted run of this script (its own project and container only).
docker rm -f "$DEMO" >/dev/null 2>&1 || true
dc down --volumes --remove-orphans --timeout 1 >/dev/null 2>&1 || true

# ---------------------------------------------------------------------------------------------
phase bases

# The python base: Debian's python3 (3.11 on bookworm) in a minbase Debian from the machine's
# own apt sources (mmdebstrap: a tarball straight into `docker import`, about half debootstrap's
# CPU time), plus this machine's extra CA certificates and pip's index settings, which pip in
# the build needs here (the network re-signs TLS). CI-only: none of it is in the shipped files.
build_python_base() {
  local tag=$1 t=$SECONDS hooks=() changes=() setting
  if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    # shellcheck disable=SC2016 # mmdebstrap's hooks get the chroot as "$1"
    hooks+=(--customize-hook='cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"'
      --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1')
  fi
  changes=(-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    -c 'ENV LANG=C.UTF-8' -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt')
  for setting in "${PIP_SETTINGS[@]}"; do changes+=(-c "ENV $setting"); done
  log "mmdebstrap $SUITE from: ${SOURCES[*]}"
  TMPDIR=$WORK mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "${hooks[@]}" "$SUITE" - "${SOURCES[@]}" 2>"$WORK/mmdebstrap.log" \
    | docker import "${changes[@]}" - "$tag" >/dev/null \
    || { tail -20 "$WORK/mmdebstrap.log" >&2; die "building the python base failed"; }
  log "python base $tag in $((SECONDS - t))s"
}

# redis-server and nginx from Debian's packages on that base (deploy/smoke/services.Dockerfile).
build_services() {
  local base=$1 redis_tag=$2 nginx_tag=$3 file=$REPO/deploy/smoke/services.Dockerfile
  local target t=$SECONDS
  for target in redis nginx; do
    local -n tag=${target}_tag
    docker build --build-arg "BASE=$base" --target "$target" -t "$tag" - <"$file" \
      >"$WORK/build-$target.log" 2>&1 || { tail -20 "$WORK/build-$target.log" >&2; return 1; }
  done
  log "redis and nginx images in $((SECONDS - t))s"
}

# pip's index settings (environment first, then pip's configuration files), as ENV lines;
# only http(s) indexes, which a container can reach (file:// ones are this machine's disk).
pip_settings() {
  python3 -m pip config list 2>/dev/null | python3 -c '
import re, sys
found = {}
for line in sys.stdin:
    m = re.match(r"(:env:|global)\.(index-url|extra-index-url|trusted-host|default-timeout)=\x27(.*)\x27$", line.strip())
    if m and (m.group(1) == ":env:" or m.group(2) not in found):
        found[m.group(2)] = m.group(3)
for name, value in found.items():
    if name.endswith("index-url"):
        value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
    if value:
        print("PIP_%s=%s" % (name.upper().replace("-", "_"), value))
'
}

if [[ -z ${PYTHON_IMAGE:-} || -z ${REDIS_IMAGE:-} || -z ${NGINX_IMAGE:-} ]]; then
  mapfile -t PIP_SETTINGS < <(pip_settings)
  recipe=$(
    declare -f build_python_base build_services
    printf '%s\n' "$SUITE" "${SOURCES[@]}" "${PIP_SETTINGS[@]}"
    cat "$REPO/deploy/smoke/services.Dockerfile"
    cat /usr/local/share/ca-certificates/* 2>/dev/null || true
  )
  hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
  py_tag=$BASE_REPO/python:$hash redis_tag=$BASE_REPO/redis:$hash nginx_tag=$BASE_REPO/nginx:$hash
  if docker image inspect "$py_tag" >/dev/null 2>&1; then
    log "python base $py_tag cached"
  else
    build_python_base "$py_tag"
  fi
  if docker image inspect "$redis_tag" "$nginx_tag" >/dev/null 2>&1; then
    log "redis and nginx images $redis_tag, $nginx_tag cached"
  else
    build_services "$py_tag" "$redis_tag" "$nginx_tag" || die "building redis and nginx images"
  fi
  export PYTHON_IMAGE=${PYTHON_IMAGE:-$py_tag}
  export REDIS_IMAGE=${REDIS_IMAGE:-$redis_tag} NGINX_IMAGE=${NGINX_IMAGE:-$nginx_tag}
fi
log "PYTHON_IMAGE=$PYTHON_IMAGE REDIS_IMAGE=$REDIS_IMAGE NGINX_IMAGE=$NGINX_IMAGE"

# ---------------------------------------------------------------------------------------------
phase image

# The build stage gets a tag of its own: the next run's layer cache, not a dangling image.
BUILD_STAGE=$BASE_REPO/build-stage:latest
mapfile -t old_ids < <(docker image inspect -f '{{.Id}}' "$IMAGE" "$BUILD_STAGE" 2>/dev/null)
for target in build runtime; do
  tag=$IMAGE
  [[ $target == build ]] && tag=$BUILD_STAGE
  docker build --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --target "$target" -t "$tag" . \
    >"$WORK/build-$target.log" 2>&1 \
    || { tail -30 "$WORK/build-$target.log" >&2; die "docker build of the shipped Dockerfile failed"; }
done
# What earlier runs left (their builds, older recipes' bases) is this script's own: drop it.
mapfile -t new_ids < <(docker image inspect -f '{{.Id}}' "$IMAGE" "$BUILD_STAGE")
for id in "${old_ids[@]}"; do
  [[ " ${new_ids[*]} " == *" $id "* ]] || docker rmi "$id" >/dev/null 2>&1 || true
done
if [[ -n ${hash:-} ]]; then
  docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$BASE_REPO/\(python\|redis\|nginx\):" \
    | grep -v ":$hash\$" | xargs -r docker rmi >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
log "built $IMAGE: $((size / 1000000)) MB, USER $user"
[[ -n $user && ${user%%:*} != 0 && ${user%%:*} != root ]] || die "the image runs as root (USER '$user')"

# ---------------------------------------------------------------------------------------------
phase demo

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
wait_http() { # URL SECONDS: until it answers 200
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    [[ $(http_status "$1") == 200 ]] && return 0
    sleep 0.25
  done
  return 1
}
chat_body='{"model": "grok-4-1-fast-non-reasoning", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}'

# As the k8s pod runs it: read-only root with a /tmp tmpfs, no capabilities, no privilege gain.
docker run -d --name "$DEMO" --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges -p 127.0.0.1::8000 "$IMAGE" --demo >/dev/null
port=$(docker port "$DEMO" 8000/tcp | head -1)
port=${port##*:}
demo=http://127.0.0.1:$port
wait_http "$demo/healthz" 30 || die "the demo's /healthz did not answer 200 within 30s"
[[ $(http_status "$demo/readyz") == 200 ]] || die "the demo's /readyz is not 200"
uid=$(docker exec "$DEMO" id -u)
[[ $uid != 0 ]] || die "the demo container runs as root"
key=$(docker logs "$DEMO" 2>&1 | sed -n 's/.*GROK_GATEWAY_KEY=\([^[:space:]]*\).*/\1/p' | head -1)
[[ -n $key ]] || die "the demo printed no key"
curl -sS -N --max-time 30 "$demo/api/v1/chat/completions" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d "$chat_body" >"$WORK/demo-stream.txt" \
  || die "the demo stream failed"
grep -q '"content"' "$WORK/demo-stream.txt" || die "the demo stream carried no content"
[[ $(grep -v '^$' "$WORK/demo-stream.txt" | tail -1) == 'data: [DONE]' ]] \
  || die "the demo stream did not end with data: [DONE]"
log "demo on :$port: /healthz and /readyz 200, uid $uid, $(grep -c '^data: ' "$WORK/demo-stream.txt") events to [DONE]"
t=$SECONDS
docker stop -t 30 "$DEMO" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$DEMO")
[[ $code == 0 ]] || die "the demo exited $code on SIGTERM, not 0"
log "SIGTERM: exit 0 in $((SECONDS - t))s"
docker rm "$DEMO" >/dev/null

# ---------------------------------------------------------------------------------------------
phase compose

# Publish the load balancer on a free loopback port, not on 8000 for every interface.
LB_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LB_PORT="127.0.0.1:$LB_PORT" GATEWAY_IMAGE=$IMAGE
lb=http://$LB_PORT
COMPOSE_UP=1
# --build: compose's own build section, from the layers the image phase left (seconds).
dc up -d --build --wait --wait-timeout 120 >"$WORK/compose-up.log" 2>&1 \
  || { tail -30 "$WORK/compose-up.log" >&2; die "docker compose up did not get every service healthy"; }
log "compose up: every service running and healthy after $((SECONDS - PHASE_T0))s"
wait_http "$lb/readyz" 30 || die "/readyz through nginx did not answer 200"
for _ in 1 2; do # one answer from each replica, round robin
  ready=$(curl -s --max-time 5 "$lb/readyz")
  [[ $ready == *redis* && $ready != *fallback* ]] || die "a replica is not using Redis: $ready"
done
log "all services healthy; /readyz via nginx: $ready"

# The budget is per clock-aligned minute: run the requests inside one window.
minute_left() { echo $((60 - 10#$(date +%S))); }
if (($(minute_left) < 10)); then
  log "waiting $(minute_left)s for a fresh rate-limit window"
  sleep "$(minute_left)"
fi
window=$(($(date +%s) / 60))

# The README's curl, as written there, pointed at this run's port.
readme_curl=$(awk '/^### Docker Compose/ {s = 1} s && /^curl / {c = 1} c {print} c && !/\\$/ {exit}' README.md)
[[ $readme_curl == curl* ]] || die "no curl command in the README's Docker Compose section"
readme_curl=${readme_curl//http:\/\/localhost:8000/$lb}
bash -c "$readme_curl" >"$WORK/readme-stream.txt" 2>"$WORK/readme-curl.err" \
  || die "the README's curl failed: $(cat "$WORK/readme-curl.err")"
[[ $(grep -v '^$' "$WORK/readme-stream.txt" | tail -1) == 'data: [DONE]' ]] \
  || die "the README's curl did not stream to data: [DONE]: $(head -c 300 "$WORK/readme-stream.txt")"
log "the README's curl streamed $(grep -c '^data: ' "$WORK/readme-stream.txt") events to [DONE]"

# N/minute for the compose demo key, from the key file compose mounts.
limit=$(python3 - <<'EOF'
import re, tomllib
doc = tomllib.load(open("deploy/compose/keys.toml", "rb"))
key = next(k for k in doc["keys"] if k["id"] == "compose-demo")
rate = key.get("requests", doc.get("defaults", {}).get("requests", ""))
m = re.fullmatch(r"\s*(\d+)\s*/\s*(1\s*)?minute\s*", rate)
print(m.group(1) if m else "")
EOF
)
[[ -n $limit ]] || die "deploy/compose/keys.toml: the compose-demo key has no plain N/minute request rate"
total=$((limit + 10))
declare -A answered=()
: >"$WORK/budget.txt"
# Request 1 was the README's curl; then N+9 more, each with its own X-Request-ID.
for ((i = 2; i <= total; i++)); do
  rid=smoke-budget-$i
  curl -s -o /dev/null --max-time 10 -w '%{http_code} %header{x-request-id}\n' \
    "$lb/api/v1/chat/completions" -H "Authorization: Bearer $COMPOSE_KEY" -H "X-Request-ID: $rid" \
    -H 'Content-Type: application/json' \
    -d '{"model": "grok-4-1-fast-non-reasoning", "messages": [{"role": "user", "content": "Hi"}]}' \
    >>"$WORK/budget.txt" || true
done
(($(date +%s) / 60 == window)) || die "the requests crossed a rate-limit window boundary (slow machine?): run again"
ok=$(($(grep -c '^200 ' "$WORK/budget.txt" || true) + 1)) # + the README's curl
limited=$(grep -c '^429 ' "$WORK/budget.txt" || true)
other=$(grep -v -c -E '^(200|429) ' "$WORK/budget.txt" || true)
((other == 0)) || die "statuses other than 200/429: $(grep -v -E '^(200|429) ' "$WORK/budget.txt" | sort | uniq -c | tr '\n' ' ')"
((ok == limit && limited == 10)) || die "$total requests for $limit/minute gave $ok x 200 and $limited x 429, not $limit and 10"
bad_ids=$(awk '$2 != "smoke-budget-" (NR + 1)' "$WORK/budget.txt" | head -3)
[[ -z $bad_ids ]] || die "X-Request-ID not echoed through nginx: $bad_ids"

# Who answered: each replica's access log lines for these request ids.
for svc in gateway-1 gateway-2; do
  answered[$svc]=$(dc logs --no-color --no-log-prefix "$svc" 2>/dev/null | python3 -c '
import json, sys
counts = {}
for line in sys.stdin:
    try:
        doc = json.loads(line[line.find("{"):])
    except ValueError:
        continue
    if str(doc.get("request_id", "")).startswith("smoke-budget-"):
        counts[doc.get("status")] = counts.get(doc.get("status"), 0) + 1
print(counts.get(200, 0), counts.get(429, 0))')
done
read -r ok1 limited1 <<<"${answered[gateway-1]}"
read -r ok2 limited2 <<<"${answered[gateway-2]}"
((ok1 + ok2 + 1 == limit && limited1 + limited2 == 10)) \
  || die "the replicas' access logs show ${answered[gateway-1]} / ${answered[gateway-2]} (200 429), not $((limit - 1)) and 10 in all"
((ok1 > 0 && ok2 > 0 && limited1 > 0 && limited2 > 0)) \
  || die "one replica answered all the 200s or all the 429s: gateway-1 $ok1/$limited1, gateway-2 $ok2/$limited2"
log "$total requests for $limit/minute: $ok x 200, $limited x 429; gateway-1 $ok1 x 200 + $limited1 x 429, gateway-2 $ok2 x 200 + $limited2 x 429 (+ the README's request)"

# Redis SIGKILLed and started again on its volume: the month's count survives (append-only,
# fsynced every second). In `local` mode the replicas serve meanwhile and find Redis again.
month_requests() {
  curl -s --max-time 5 "$lb/api/v1/usage" -H "Authorization: Bearer $COMPOSE_KEY" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["usage"]["key"]["month"]["requests"])' 2>/dev/null || true
}
before=$(month_requests)
[[ $before == "$limit" ]] || die "usage says $before requests this month before the restart, not $limit"
sleep 1.5 # appendfsync everysec
dc kill -s SIGKILL redis >/dev/null 2>&1 || die "docker compose kill redis"
dc up -d --wait --wait-timeout 60 redis >"$WORK/redis-up.log" 2>&1 \
  || { tail -10 "$WORK/redis-up.log" >&2; die "redis did not come back healthy"; }
after=""
for _ in $(seq 60); do
  after=$(month_requests)
  [[ $after == "$before" ]] && break
  sleep 0.5
done
[[ $after == "$before" ]] || die "after a SIGKILL of redis, usage says $after requests this month, not $before"
log "redis SIGKILLed and restarted on its volume: the month's $after requests kept"

# Graceful stop: SIGTERM, and both gateways and the simulator exit 0 within their grace.
t=$SECONDS
dc stop >/dev/null 2>&1
for svc in gateway-1 gateway-2 simulator; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -a -q "$svc")")
  [[ $code == 0 ]] || die "$svc exited $code on SIGTERM, not 0"
done
log "SIGTERM: gateways and simulator exit 0; stack stopped in $((SECONDS - t))s"

end_phase
