#!/usr/bin/env bash
# What `make test` runs: makes sure the machine has what the tests use (redis-server, chromium,
# promtool, tmux, nginx, curl, the npm packages of the interop tests), starts an ephemeral
# redis-server on a free loopback port, runs the checks and every test, and stops the server
# again — on a fresh Debian machine with only Go, Node and npm present (as root, for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus) # promtool lints /metrics
command -v tmux >/dev/null 2>&1 || missing+=(tmux)             # herald monitor's screen test
command -v nginx >/dev/null 2>&1 || missing+=(nginx)           # docs/deploy.md's recipe (test/proxy_test.go); the tests run their own nginx
command -v curl >/dev/null 2>&1 || missing+=(curl)             # the README's curl lines, through nginx and over HTTP/2
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${missing[*]}: install them (apt-get install -y ${missing[*]}) or run as root"
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages of the Node tests (clientjs/test/frameworks: React and Vue with Laravel's bindings,
# for the hooks test only; clientjs/examples/inbox: the example the inbox test runs): installed
# when missing or older than their lock file.
for dir in test/node clientjs clientjs/test/frameworks clientjs/examples/inbox; do
  [ -f "$dir/package-lock.json" ] || continue
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "installing the npm packages of $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# An ephemeral redis-server on a free port, stopped however this script ends.
workdir=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 20000))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi # taken
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir" \
    --daemonize no --logfile "$workdir/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break 2; fi
    sleep 0.1
  done
  kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
done
if [ -z "$redis_pid" ]; then log "could not start redis-server"; cat "$workdir/redis.log" >&2 || true; exit 1; fi
export HERALD_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
log "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port"

log "gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then log "gofmt would change: $unformatted"; exit 1; fi
go vet ./...

log "unit tests (race detector)"
go test -race -count=1 -timeout 8m ./...

log "clientjs tests (node --test, against the real herald binary)"
go build -o bin/herald ./cmd/herald
(cd clientjs && HERALD_BIN="$PWD/../bin/herald" npm test)
