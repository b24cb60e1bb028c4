#!/usr/bin/env bash
# Screenshot of the demo's live status page, for the README (not run in CI: Chromium is large).
# Installs Debian's chromium if missing, starts a topology of its own (3 shards, each a master and
# a replica, 3 sentinels) and the demo site under gunicorn, sends a little traffic, saves
# docs/status.png, then stops everything it started.
#   scripts/screenshot.sh
#   KILL=shard1-master scripts/screenshot.sh   # kill a node first: the page mid-failover
#   PORT=8766 OUT=/tmp/status.png scripts/screenshot.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"

port="${PORT:-8765}"
out="${OUT:-docs/status.png}"
install_os_packages
if ! command -v chromium >/dev/null; then
    say "installing chromium"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
python="$(make_venv "${PYTHON_VERSION:-3.11}")" || { echo "Python ${PYTHON_VERSION:-3.11} not found" >&2; exit 1; }

run_dir="$REPO/.hacache/screenshot"  # not the demo's: a running demo is left alone
profile="$(mktemp -d)"
gunicorn_pid=""
cleanup() {
    [ -z "$gunicorn_pid" ] || { kill "$gunicorn_pid" 2>/dev/null; wait "$gunicorn_pid" 2>/dev/null || true; }
    "$python" -m hacache.topology down --dir "$run_dir" >/dev/null 2>&1 || true
    rm -rf "$profile"
}
trap cleanup EXIT

"$python" -m hacache.topology down --dir "$run_dir" >/dev/null 2>&1 || true
options='{"NEAR_CACHE": true, "FAIL_OPEN": true, "NEAR_CACHE_EXCLUDE": ["*:django.contrib.sessions.cache*"], "METRICS": true}'
"$python" -m hacache.topology up --dir "$run_dir" --shards 3 --replicas 1 --sentinels 3 \
    --options "$options" >/dev/null

export HACACHE_CACHES_FILE="$run_dir/caches.json"
export PROMETHEUS_MULTIPROC_DIR="$run_dir/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
say "serving testproject on http://127.0.0.1:$port/"
"$python" -m gunicorn testproject.wsgi -b "127.0.0.1:$port" -w 3 -c testproject/gunicorn_conf.py \
    --log-level warning &
gunicorn_pid=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz/" 2>/dev/null && break
    sleep 0.1
done

say "a little traffic"
base="http://127.0.0.1:$port"
for i in $(seq 60); do
    curl -fsS -o /dev/null "$base/counter/"
    curl -fsS -o /dev/null "$base/fragments/?n=30"
    curl -sS -o /dev/null "$base/item/key$((i % 10))/"  # 404 on a miss
    curl -fsS -o /dev/null -X POST --data "v$i" "$base/item/key$((i % 7))/"
    curl -fsS -o /dev/null "$base/slow/"
done 2>/dev/null || true
if [ -n "${KILL:-}" ]; then
    say "killing $KILL"
    "$python" -m hacache.topology kill --dir "$run_dir" "$KILL"
    sleep "${WAIT:-4}"
    for _ in $(seq 20); do curl -fsS -o /dev/null "$base/counter/" || true; done 2>/dev/null
fi
sleep 1.5  # every worker folds its counts into the metric files once a second

say "screenshot of $base/status/ into $out"
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1280,1000 --virtual-time-budget=3000 \
    --screenshot="$out" "$base/status/" 2>/dev/null
ls -l "$out"
