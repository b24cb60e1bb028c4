# Shared by scripts/*.sh: finds interpreters, installs what the project needs, idempotently.
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# nutcracker (twemproxy) lets the tests check ketama placement against the real thing;
# prometheus (ships prometheus and promtool) checks and runs the alert rules and dashboard queries;
# openssl makes the TLS tests' throw-away certificates.
APT_PACKAGES=(redis-server redis-sentinel nutcracker prometheus openssl)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_os_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
    command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || missing+=(nutcracker)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v openssl >/dev/null || missing+=(openssl)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
    elif command -v brew >/dev/null; then
        brew install redis twemproxy prometheus openssl
    else
        echo "Please install redis-server and redis-sentinel (Redis >= 6.2) and prometheus." >&2
        return 1
    fi
}

# find_python 3.12 -> path of an interpreter of that version, or nothing.
find_python() {
    local version="$1" candidate
    for candidate in "python$version" \
        "$(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -1)"; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$version" ]; then
            command -v "$candidate"
            return 0
        fi
    done
    if [ "$version" = "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ]; then
        command -v python3
    fi
}

# make_venv 3.11 -> creates/updates .venv/py3.11 with hacache[dev] and prints its python.
make_venv() {
    local version="$1" python venv
    python="$(find_python "$version")"
    [ -n "$python" ] || return 1
    venv="$REPO/.venv/py$version"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        "$python" -m venv "$venv"
    fi
    # Reinstall only when the dependency list changed.
    local stamp="$venv/.installed" want
    want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing hacache[dev] into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[dev]" >&2
        echo "$want" >"$stamp"
    fi
    echo "$venv/bin/python"
}
