#!/usr/bin/env bash
# Runs the whole test suite on every supported Python, on real Redis processes it starts itself.
#   scripts/test.sh                 # Python 3.11 (Django 5.2) and 3.12 (Django 6.x)
#   PYTHONS=3.11 scripts/test.sh -k ring   # one Python; extra arguments go to pytest
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"

install_os_packages
status=0
for version in ${PYTHONS:-3.11 3.12}; do
    if ! python="$(make_venv "$version")"; then
        if [ -n "${CI:-}" ] || [ -n "${PYTHONS:-}" ]; then
            echo "Python $version not found" >&2
            exit 1
        fi
        say "Python $version not found: skipped (set PYTHONS to choose)"
        continue
    fi
    say "Python $version: $("$python" -c 'import django; print("Django", django.get_version())')"
    "$python" -m ruff check .
    "$python" -m ruff format --check . >/dev/null || { "$python" -m ruff format --diff .; exit 1; }
    "$python" -m pytest -p no:cacheprovider "$@" || status=$?
    [ "$status" -eq 0 ] || break
done
exit "$status"
