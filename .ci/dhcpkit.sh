#!/usr/bin/env bash
# Creates the Python 3.7 venv with dhcpkit 1.0.7 that the requestor interop test
# (crates/requestor/tests/dhcpkit.rs) runs as an independent leasequery server.
# Idempotent: does nothing when the venv already imports dhcpkit 1.0.7.
# Env: LQ6_DHCPKIT_VENV (default /opt/dhcpkit37).
set -euo pipefail
VENV="${LQ6_DHCPKIT_VENV:-/opt/dhcpkit37}"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("dhcpkit") != "1.0.7")' 2>/dev/null; then
    echo "dhcpkit.sh: $VENV already has dhcpkit 1.0.7"
    exit 0
fi
if [ -x "$PY" ] && "$PY" -c 'import pkg_resources, sys; sys.exit(pkg_resources.get_distribution("dhcpkit").version != "1.0.7")' 2>/dev/null; then
    echo "dhcpkit.sh: $VENV already has dhcpkit 1.0.7"
    exit 0
fi
ROOT="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
PY37="$ROOT/versions/3.7.16/bin/python"
if [ ! -x "$PY37" ]; then
    echo "dhcpkit.sh: Python 3.7 not found at $PY37 (dhcpkit's server needs Python < 3.8)" >&2
    exit 1
fi
rm -rf "$VENV"
"$PY37" -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q dhcpkit==1.0.7
"$PY" -c 'import dhcpkit.ipv6.server.main' && echo "dhcpkit.sh: installed dhcpkit 1.0.7 in $VENV"
