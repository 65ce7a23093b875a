#!/usr/bin/env bash
# Installs the Chainlit peer's own virtual environment, bench/.venv-chainlit (Python 3.12).
# Safe to re-run: exits 0 at once when it is already in place. On failure it prints one line
# and exits non-zero, so the benchmark can skip the peer.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/bench/.venv-chainlit"
python="$venv/bin/python"
uv=(python3 -m uv)

# Chainlit pins none of these; openai 2.x is the major its own test suite runs against.
requirements=(
    "chainlit==2.12.0"
    "openai>=2,<3"
    "python-socketio[asyncio_client]>=5.11,<6"
    "aiohttp>=3.9"
)

# Not `import chainlit`: that writes .chainlit/ and .files/ into the working directory.
installed() {
    [ -x "$python" ] && "$python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import aiohttp, openai, socketio
assert version("chainlit") == "2.12.0"
assert openai.__version__.startswith("2.")
EOF
}

fail() {
    echo "chainlit peer: install failed: $1" >&2
    exit 1
}

installed && exit 0

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cd "$root" || fail "no repository root"  # its .python-version pins 3.12 for uv
if [ ! -x "$python" ]; then
    "${uv[@]}" venv --quiet --python 3.12 "$venv" >"$log" 2>&1 || fail "$(tail -n 1 "$log")"
fi
"${uv[@]}" pip install --quiet --python "$python" "${requirements[@]}" >"$log" 2>&1 \
    || fail "$(tail -n 1 "$log")"
installed || fail "packages installed but do not import"
echo "chainlit peer: installed in $venv"
