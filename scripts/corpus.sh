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

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out" "$work/all" "$work/target"
failed=0
for c in "$corpus"/*/; do
  n=$(basename "$c")
  ln -s "$c" "$work/all/$n"
  [[ $n =~ $target ]] && ln -s "$c" "$work/target/$n"
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
python3 - "$json" "$root/conformance/floor.json" "$failed" <<'PY'
import json, sys
got, floor, failed = json.loads(sys.argv[1]), json.load(open(sys.argv[2])), int(sys.argv[3])
ok = True
if failed:
    print(f"corpus: {failed} case(s) crashed or timed out"); ok = False
if got["f1"] < floor["f1"]:
    print(f"corpus: F1 {got['f1']} is below the floor {floor['f1']}"); ok = False
if got["exact"] < floor["exact"]:
    print(f"corpus: {got['exact']} exact cases, below the floor {floor['exact']}"); ok = False
print(f"corpus: floor F1 >= {floor['f1']}, exact >= {floor['exact']}: {'ok' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PY
