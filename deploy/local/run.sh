#!/usr/bin/env bash
# The multi-process setup on one machine: nats-server, three store nodes, two edges, two
# ingest agents for two clusters (east, west: two directories of YAML), a demo backend and one
# real Envoy per cluster's gateway. Everything started here is stopped on exit (Ctrl-C).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
eval "$(scripts/setup.sh)"
cargo build --locked -p flotilla
bin=${CARGO_TARGET_DIR:-$root/target}/debug/flotilla
work=${FLOTILLA_WORK:-$(mktemp -d)}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs and data were in $work"
}
trap cleanup EXIT INT TERM
start() { local name=$1; shift; "$@" >"$work/$name.log" 2>&1 & pids+=($!); }

nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
mkdir -p "$work/nats"
start nats "$nats_bin" -a 127.0.0.1 -p 4222 -js -sd "$work/nats"
sleep 0.5

peers=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
for i in 1 2 3; do
  start "store$i" "$bin" store --id $i --data-dir "$work/store$i" --grpc 127.0.0.1:700$i \
    --api 127.0.0.1:808$i --peers $peers --nats nats://127.0.0.1:4222
done
stores=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
start edge1 "$bin" edge --id edge1 --stores $stores --xds 127.0.0.1:18001 --admin 127.0.0.1:19001
start edge2 "$bin" edge --id edge2 --stores $stores --xds 127.0.0.1:18002 --admin 127.0.0.1:19002

# The demo backend, shared by both clusters' Services.
mkdir -p "$work/www/hello"
echo "hello from the flotilla demo backend" > "$work/www/hello/index.html"
start backend python3 -m http.server 18080 --bind 127.0.0.1 --directory "$work/www"

# Two clusters, each a directory of YAML: the same demo, on different Envoy ports.
for c in east west; do
  mkdir -p "$work/$c"
  cp examples/standalone/*.yaml "$work/$c/"
done
sed -i 's/port: 10080/port: 10081/' "$work/east/gateway.yaml"
sed -i 's/port: 10080/port: 10082/' "$work/west/gateway.yaml"
start ingest-east "$bin" ingest --cluster east --dir "$work/east" --nats nats://127.0.0.1:4222
start ingest-west "$bin" ingest --cluster west --dir "$work/west" --nats nats://127.0.0.1:4222

# One Envoy per cluster's gateway, each bootstrapped with both edges (failover between them).
"$bin" bootstrap --gateway east/default/demo --xds 127.0.0.1:18001,127.0.0.1:18002 --admin-port 19911 > "$work/envoy-east.json"
"$bin" bootstrap --gateway west/default/demo --xds 127.0.0.1:18002,127.0.0.1:18001 --admin-port 19912 > "$work/envoy-west.json"
start envoy-east "$ENVOY_BIN" -c "$work/envoy-east.json" --use-dynamic-base-id
start envoy-west "$ENVOY_BIN" -c "$work/envoy-west.json" --use-dynamic-base-id

for _ in $(seq 1 150); do
  if curl -fsS http://127.0.0.1:10081/hello/ >/dev/null 2>&1 && curl -fsS http://127.0.0.1:10082/hello/ >/dev/null 2>&1; then break; fi
  sleep 0.2
done
cat <<MSG

Flotilla is running: nats-server, 3 store nodes, 2 edges, 2 ingest agents, 2 Envoys.
  curl http://127.0.0.1:10081/hello/        # cluster east's gateway
  curl http://127.0.0.1:10082/hello/        # cluster west's gateway
  curl http://127.0.0.1:8081/api/v1/revision   # store node 1 (8082, 8083 for the others)
  curl 'http://127.0.0.1:8081/api/v1/resources?cluster=west&kind=HTTPRoute'
  curl http://127.0.0.1:19001/stats         # edge 1
Edit $work/east/*.yaml or $work/west/*.yaml; logs in $work. Ctrl-C stops everything.
MSG
wait
