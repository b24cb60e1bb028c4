#!/usr/bin/env bash
# The demo: starts a local Redis topology (3 shards, each a master and a replica, 3 sentinels),
# serves the testproject site on it with gunicorn, and stops everything on Ctrl-C. Server errors
# and hacache's warnings (a shard failing open, a promotion) show in this terminal.
#   scripts/demo.sh            # http://127.0.0.1:8000/
#   PORT=8080 WORKERS=4 DEMO_OPTIONS='{"NEAR_CACHE": false}' scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"

install_os_packages
python="$(make_venv "${PYTHON_VERSION:-3.11}")" || { echo "Python ${PYTHON_VERSION:-3.11} not found" >&2; exit 1; }
run_dir="$REPO/.hacache/topology"

"$python" -m hacache.topology down --dir "$run_dir" >/dev/null 2>&1 || true
# The recommended HA set-up for a web cache: fail open (a dead shard reads as empty, never a 500)
# and keep sessions out of the near-cache (written about as often as read).
default_options='{"NEAR_CACHE": true, "FAIL_OPEN": true, "NEAR_CACHE_EXCLUDE": ["*:django.contrib.sessions.cache*"], "METRICS": true}'
"$python" -m hacache.topology up --dir "$run_dir" --shards 3 --replicas 1 --sentinels 3 \
    --options "${DEMO_OPTIONS:-$default_options}"
trap '"$python" -m hacache.topology down --dir "$run_dir"' EXIT

export HACACHE_CACHES_FILE="$run_dir/caches.json"
# prometheus-client's multiprocess mode: every worker's metrics, summed at /metrics/.
export PROMETHEUS_MULTIPROC_DIR="$run_dir/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
say "serving testproject on http://127.0.0.1:${PORT:-8000}/ (Ctrl-C stops it and the topology)"
"$python" -m gunicorn testproject.wsgi -b "127.0.0.1:${PORT:-8000}" -w "${WORKERS:-3}" \
    -c testproject/gunicorn_conf.py \
    --access-logfile - ${DEMO_ARGS:-}
