#!/bin/sh
# Installs what a fresh Debian bookworm machine lacks to build corral and run its tests.
# Idempotent and quiet when everything is present; needs root only when something is missing.
set -eu

PKGS="build-essential pkg-config libpython3-dev python3 libcmocka-dev clang clang-format
python3-pytest python3-django python3-flask python3-pylibmc python3-requests
nginx-light memcached node-llhttp"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "setup-debian: installing$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-debian: run as root (or install:$missing)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
# Debian's nginx package starts a system nginx on port 80; corral's tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
