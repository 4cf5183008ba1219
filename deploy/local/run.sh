#!/usr/bin/env bash
# The multi-process setup on one machine: nats-server, three store nodes, two edges, two
# ingest agents for two clusters (east, west: two directories of YAML), a demo backend and one
# real Envoy per cluster's gateway, secured as a deployment is: mTLS between every part, one
# NATS user per agent, bearer tokens on the API. Everything started here is stopped on exit
# (Ctrl-C).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
eval "$(scripts/setup.sh)"
cargo build --locked -p flotilla
bin=${CARGO_TARGET_DIR:-$root/target}/debug/flotilla
work=${FLOTILLA_WORK:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs and data were in $work"
}
# Ctrl-C or a TERM ends the script (and so runs cleanup once) wherever it is, even in the
# readiness loop below.
trap cleanup EXIT
trap 'exit 130' INT TERM
start() { local name=$1; shift; "$@" >"$work/$name.log" 2>&1 & pids+=($!); }

# Keys, passwords and tokens written below are for this user only.
umask 077

# One CA and a certificate per part: its identity (spiffe://flotilla/<role>/<name>) is what
# the others check. Stores and edges name 127.0.0.1 and localhost, where they are reached.
# Each Envoy gets its gateway's proxy certificate: an edge serves it that gateway only.
# nats-server gets a server certificate of its own (role nats).
certs=$work/certs
"$bin" certs --out "$certs" --stores 1,2,3 --edges edge1,edge2 --agents east,west \
  --proxies east/default/demo,west/default/demo --admins admin --readers reader \
  --nats nats >/dev/null
# The three TLS flags of the part whose files are named $1 (into the array tls).
tls_of() { tls=(--tls-ca "$certs/ca.pem" --tls-cert "$certs/$1.pem" --tls-key "$certs/$1.key"); }

# API tokens: `flotilla token` prints the token, then its line for --api-tokens (which holds
# only its SHA-256). `ops` is an admin (flotilla ctl: membership, snapshots); `viewer` only
# reads, which is all the queries printed at the end need.
: >"$work/api-tokens"
for t in admin:ops reader:viewer; do
  { read -r token; read -r line; } < <("$bin" token --role "${t%%:*}" --name "${t#*:}" 2>/dev/null)
  echo "$token" >"$work/${t#*:}.token"
  echo "$line" >>"$work/api-tokens"
done

# NATS with one user per part: agent-<cluster> may publish its own cluster's subject only, so
# an agent cannot speak for another cluster; the stores read the stream. Over TLS with client
# certificates (each part presents its own: agent-<cluster>, store-<id>) on top of the
# passwords.
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
"$bin" nats-config --out "$work/nats" --clusters east,west --listen 127.0.0.1:4222 \
  --tls-cert "$certs/nats-nats.pem" --tls-key "$certs/nats-nats.key" --tls-ca "$certs/ca.pem" >/dev/null
start nats "$nats_bin" -c "$work/nats/nats.conf"
sleep 0.5
# The NATS flags of user $1 presenting the certificate named $2 (into the array nats).
nats_as() {
  nats=(--nats nats://127.0.0.1:4222 --nats-user "$1" --nats-password-file "$work/nats/nats-$1.password"
    --nats-ca "$certs/ca.pem" --nats-cert "$certs/$2.pem" --nats-key "$certs/$2.key")
}

peers=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
for i in 1 2 3; do
  nats_as store "store-$i"
  tls_of "store-$i"
  start "store$i" "$bin" store --id $i --data-dir "$work/store$i" --grpc 127.0.0.1:700$i \
    --api 127.0.0.1:808$i --peers $peers "${nats[@]}" "${tls[@]}" --api-tokens "$work/api-tokens"
done
stores=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
# Proxies authenticate with their certificate; the token key also lets an edge accept a
# proxy that carries its gateway's token instead (`flotilla bootstrap --token-key`).
for e in 1 2; do
  tls_of "edge-edge$e"
  start "edge$e" "$bin" edge --id "edge$e" --stores $stores --xds 127.0.0.1:1800$e \
    --admin 127.0.0.1:1900$e "${tls[@]}" --proxy-token-key "$certs/proxy-token.key"
done

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
for c in east west; do
  nats_as "agent-$c" "agent-$c"
  start "ingest-$c" "$bin" ingest --cluster $c --dir "$work/$c" "${nats[@]}"
done

# One Envoy per cluster's gateway, each bootstrapped with both edges (failover between them),
# trusting the CA for the edges' certificates and presenting its gateway's proxy certificate.
tls_of proxy-east-default-demo
"$bin" bootstrap --gateway east/default/demo --xds 127.0.0.1:18001,127.0.0.1:18002 --admin-port 19911 \
  "${tls[@]}" > "$work/envoy-east.json"
tls_of proxy-west-default-demo
"$bin" bootstrap --gateway west/default/demo --xds 127.0.0.1:18002,127.0.0.1:18001 --admin-port 19912 \
  "${tls[@]}" > "$work/envoy-west.json"
start envoy-east "$ENVOY_BIN" -c "$work/envoy-east.json" --use-dynamic-base-id
start envoy-west "$ENVOY_BIN" -c "$work/envoy-west.json" --use-dynamic-base-id

for _ in $(seq 1 150); do
  if curl -fsS http://127.0.0.1:10081/hello/ >/dev/null 2>&1 && curl -fsS http://127.0.0.1:10082/hello/ >/dev/null 2>&1; then break; fi
  sleep 0.2
done
# The API and the edges' admin ports speak HTTPS with the CA's certificates; the API wants a
# bearer token (without one a caller is an anonymous reader, and Secret data is redacted).
cat <<MSG

Flotilla is running: nats-server, 3 store nodes, 2 edges, 2 ingest agents, 2 Envoys.
  curl http://127.0.0.1:10081/hello/        # cluster east's gateway
  curl http://127.0.0.1:10082/hello/        # cluster west's gateway
  curl --cacert $certs/ca.pem -H "Authorization: Bearer \$(cat $work/viewer.token)" \\
    https://127.0.0.1:8081/api/v1/revision   # store node 1 (8082, 8083 for the others)
  curl --cacert $certs/ca.pem -H "Authorization: Bearer \$(cat $work/viewer.token)" \\
    'https://127.0.0.1:8081/api/v1/resources?cluster=west&kind=HTTPRoute'
  curl --cacert $certs/ca.pem https://127.0.0.1:19001/stats         # edge 1
  $bin ctl --api 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \\
    --tls-ca $certs/ca.pem --token-file $work/ops.token members
Certificates in $certs, NATS users in $work/nats, API tokens in $work/*.token.
Edit $work/east/*.yaml or $work/west/*.yaml; logs in $work. Ctrl-C stops everything.
MSG
wait
