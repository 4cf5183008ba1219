#!/usr/bin/env bash
# The demo: installs what is needed, builds Flotilla, and runs `flotilla standalone` on
# examples/standalone with a demo backend and a real Envoy. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --locked -p flotilla
bin=${CARGO_TARGET_DIR:-target}/debug/flotilla
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# The demo backend (the EndpointSlice in examples/standalone points at 127.0.0.1:18080).
mkdir -p "$work/www/hello"
echo "hello from the flotilla demo backend" > "$work/www/hello/index.html"
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$work/www" >"$work/backend.log" 2>&1 &
pids+=($!)

"$bin" standalone --dir examples/standalone --xds 127.0.0.1:18000 --api 127.0.0.1:8081 \
  --admin 127.0.0.1:19000 --data-dir "$work/data" &
pids+=($!)
sleep 1
"$bin" bootstrap --gateway local/default/demo --xds 127.0.0.1:18000 --admin-port 19901 > "$work/envoy.json"
"$ENVOY_BIN" -c "$work/envoy.json" --use-dynamic-base-id --log-level warn >"$work/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:10080/hello/ >/dev/null 2>&1; then break; fi
  sleep 0.2
done
cat <<MSG

Flotilla standalone is running with a real Envoy (gateway local/default/demo).
  curl http://127.0.0.1:10080/hello/                     # routed by Envoy to the demo backend
  curl http://127.0.0.1:8081/api/v1/resources/local/HTTPRoute/default/hello   # the route and its status
  curl http://127.0.0.1:19000/stats                      # the edge: streams, ACKs, NACKs
Edit examples/standalone/*.yaml and the change reaches Envoy at once. Ctrl-C to stop.
MSG
wait
