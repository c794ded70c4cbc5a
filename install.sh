#!/usr/bin/env bash
# The sandbox demo's one command, on a fresh Debian/Ubuntu machine (as root): system packages the sandbox needs
# (openssh-server, python3-venv; fish for the login-shell self-tests), .venv with modeldrop editable and its
# sandbox and dev extras at the versions CI tests (constraints.txt), and real EXO for the sandbox's nodes.
# It ends by saying what it built. An operator's controller needs none of this: README, "Using it on a real cluster".
set -euo pipefail
cd "$(dirname "$0")"
sshd="not installed (not root: the sandbox falls back to one local node)"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client python3-venv ca-certificates fish >/dev/null
    sshd="openssh-server $(dpkg-query -W -f '${Version}' openssh-server 2>/dev/null || echo '?')"
  else
    echo "install.sh: not root: skipping apt (the sandbox needs openssh-server and python3-venv; without sshd it uses local nodes)" >&2
  fi
elif [ -x /usr/sbin/sshd ]; then
  sshd="/usr/sbin/sshd (found)"
fi
PYTHON=${PYTHON:-python3}
t0=$SECONDS
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e '.[sandbox,dev]'
# byte-compiled once, as a wheel install is: every run's python then loads the checkout's modules without compiling
# them (0.4 s of CPU per process; where PYTHONDONTWRITEBYTECODE is set, no process would ever write them itself)
.venv/bin/python -m compileall -q -j 0 modeldrop sandbox fixtures gates benchmarks scripts tests_selftest conftest.py \
  >/dev/null
venv_s=$((SECONDS - t0))
# Real EXO for the sandbox's nodes (sandbox/exo_real), built once per machine and cached; where the EXO
# snapshot or a Python 3.13 is missing it says so in one line and the sandbox uses the EXO emulator.
exo="not built (not root): the sandbox uses the EXO emulator"
if [ "$(id -u)" = 0 ]; then
  if line=$(.venv/bin/python -m sandbox.exo_real build); then
    exo=$line
  else
    exo="not built (see above): the sandbox uses the EXO emulator"
  fi
fi
cat <<EOF
install.sh built:
  .venv        $(.venv/bin/python -c 'import modeldrop, sys; print(f"modeldrop {modeldrop.__version__} (editable, extras sandbox,dev), Python {sys.version.split()[0]}")'), $(du -sm .venv | cut -f1) MB, ${venv_s}s
  sshd         ${sshd}
  nodes' EXO   ${exo}
  next         .venv/bin/pytest gates/ benchmarks/ --sandbox
EOF
