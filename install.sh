#!/usr/bin/env bash
# Install modeldrop on a fresh Debian/Ubuntu machine (or macOS control host):
# system packages the sandbox needs (openssh-server, python3-venv; fish for the login-shell self-tests),
# then .venv with the package.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client python3-venv ca-certificates fish >/dev/null
  else
    echo "install.sh: not root: skipping apt (the sandbox needs openssh-server and python3-venv; without sshd it uses local nodes)" >&2
  fi
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[sandbox,dev]'
# Real EXO for the sandbox's nodes (sandbox/exo_real), built once per machine and cached; where the EXO
# snapshot or a Python 3.13 is missing it says so in one line and the sandbox uses the EXO emulator.
if [ "$(id -u)" = 0 ]; then
  .venv/bin/python -m sandbox.exo_real build || echo "install.sh: real EXO not built (see above): the sandbox uses the EXO emulator" >&2
fi
echo "installed: $(.venv/bin/python -c 'import modeldrop; print("modeldrop", modeldrop.__version__)') in $(pwd)/.venv"
