#!/usr/bin/env bash
# One command installs everything: Debian's Fashion-MNIST (where apt exists), a virtual
# environment in .venv, and the package with its development extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the offline Fashion-MNIST, Chromium for the page's end-to-end test, and
# docker-compose (v1), which checks docker-compose.yml offline where no `docker compose` is.
FMNIST=/usr/share/datasets/fashion-mnist
missing=()
[ -d "$FMNIST" ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
    || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing Debian's ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
[ -d "$FMNIST" ] || echo "[setup] note: $FMNIST is absent; Fashion-MNIST will need --data-dir or a download"

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "[setup] installing ecab_tune[dev] into .venv (torch is large: a few minutes on a fresh machine)"
# pip.conf here may name local package folders that are absent; keep that noise out.
.venv/bin/python -m pip install -q -e '.[dev]' 2> >(grep -v 'is ignored: it is neither' >&2)
echo "[setup] done: source .venv/bin/activate"
