#!/usr/bin/env bash
# Scores `flotilla translate` on Envoy Gateway's translator corpus (read in place from
# ../shared/conformance/eg-translate) and fails if the score on the Gateway API cases falls
# below the floor committed in conformance/floor.json, or if any case crashes or times out.
# usage: scripts/corpus.sh [FLOTILLA_BINARY] [--list-failures N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${FLOTILLA_SHARED:-$root/../shared}
corpus=$shared/conformance/eg-translate
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/flotilla}
shift || true
[ -d "$corpus" ] || { echo "corpus: $corpus not found (set FLOTILLA_SHARED)" >&2; exit 1; }
# The Gateway API cases this issue is measured on; the policy cases only must not fail.
target='^(gateway-|httproute-|grpcroute-|tlsroute-|tcproute-|udproute-|listenerset-|referencegrant-|backendtlspolicy-|backend-|serviceimport|mergegateways)'
# The traffic policies: their statuses (attachment, precedence, conflicts) have a floor too.
policies='^(clienttrafficpolicy-|backendtrafficpolicy-)'

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out" "$work/all" "$work/target" "$work/policies"
failed=0
for c in "$corpus"/*/; do
  n=$(basename "$c")
  ln -s "$c" "$work/all/$n"
  [[ $n =~ $target ]] && ln -s "$c" "$work/target/$n"
  [[ $n =~ $policies ]] && ln -s "$c" "$work/policies/$n"
  # Envoy Gateway config switches of the case (Backend API enabled, running on host, ...).
  flags=(); [ -f "$c/flags.json" ] && flags=(--flags "$c/flags.json")
  if ! timeout 20 "$bin" translate -f "$c/input.yaml" "${flags[@]}" -o yaml >"$work/out/$n.yaml" 2>"$work/out/$n.err"; then
    echo "corpus: translate failed or timed out: $n" >&2
    tail -3 "$work/out/$n.err" >&2
    failed=$((failed + 1))
  fi
done
echo "corpus: all cases:    $(python3 "$shared/conformance/score_status.py" "$work/all" "$work/out")"
json=$(python3 "$shared/conformance/score_status.py" "$work/target" "$work/out" --json)
echo "corpus: Gateway API:  $(python3 "$shared/conformance/score_status.py" "$work/target" "$work/out" "$@")"
pjson=$(python3 "$shared/conformance/score_status.py" "$work/policies" "$work/out" --json)
echo "corpus: policies:     $(python3 "$shared/conformance/score_status.py" "$work/policies" "$work/out")"
python3 - "$json" "$pjson" "$root/conformance/floor.json" "$failed" <<'PY'
import json, sys
got, pgot = json.loads(sys.argv[1]), json.loads(sys.argv[2])
floor, failed = json.load(open(sys.argv[3])), int(sys.argv[4])
ok = True
if failed:
    print(f"corpus: {failed} case(s) crashed or timed out"); ok = False
for name, g, f in [("Gateway API", got, floor), ("policies", pgot, floor["policies"])]:
    if g["f1"] < f["f1"]:
        print(f"corpus: {name} F1 {g['f1']} is below the floor {f['f1']}"); ok = False
    if g["exact"] < f["exact"]:
        print(f"corpus: {name}: {g['exact']} exact cases, below the floor {f['exact']}"); ok = False
    print(f"corpus: {name} floor F1 >= {f['f1']}, exact >= {f['exact']}")
print(f"corpus: {'ok' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PY
