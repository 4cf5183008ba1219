#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace
# (unit tests, and end-to-end tests with a real nats-server, real openraft nodes and a real Envoy).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
export ENVOY_BIN NATS_SERVER_BIN=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
cargo test --workspace --locked "$@"
