#!/usr/bin/env bash
# The conformance command: everything that needs the corpora kept outside this repository
# (Envoy Gateway's translator corpus and the Gateway API conformance suite, in
# shared/conformance beside the repository or in $FLOTILLA_SHARED/conformance). Runs, in order:
#   1. scripts/corpus.sh: Envoy Gateway's translator corpus, scored against conformance/floor.json;
#   2. the cargo tests that read the corpus (flotilla-translate's `corpus` feature);
#   3. flotilla-conformance: the Gateway API conformance table through flotilla standalone and
#      real Envoys, with the ratchet (conformance/gateway-api-passing.txt) enforced.
# Fails, saying where it looked, when the corpora are absent. Step 3 binds port 80 on
# 127.0.10.x: run it as root.
# usage: scripts/conformance.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${FLOTILLA_SHARED:-$(cd "$root/.." && pwd)/shared}
missing=()
[ -d "$shared/conformance/eg-translate" ] || missing+=("$shared/conformance/eg-translate")
[ -f "$shared/conformance/gateway-api/table.json" ] || missing+=("$shared/conformance/gateway-api/table.json")
[ -f "$shared/conformance/score_status.py" ] || missing+=("$shared/conformance/score_status.py")
if [ ${#missing[@]} -gt 0 ]; then
  {
    echo "conformance: the conformance corpora are not where this command looked:"
    printf '  missing: %s\n' "${missing[@]}"
    echo "They are not part of this repository. Put the project's shared/conformance directory"
    echo "beside the repository (as $(cd "$root/.." && pwd)/shared/conformance), or set"
    echo "FLOTILLA_SHARED to the directory that holds conformance/ (FLOTILLA_SHARED=/path/to/shared)."
  } >&2
  exit 2
fi
# Every step below reads the corpora from here (corpus.sh, the cargo tests, the harness).
export FLOTILLA_SHARED=$shared

start=$(date +%s)
eval "$(scripts/setup.sh)"
export ENVOY_BIN
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --workspace --locked
echo "conformance: build done in $(( $(date +%s) - start ))s"

scripts/corpus.sh "$target/debug/flotilla"
echo "conformance: translator corpus done in $(( $(date +%s) - start ))s"

# Only the corpus module: the crate's other tests belong to the test command. A filter that
# matches nothing passes silently, so at least one test must have run.
log=$(mktemp); trap 'rm -f "$log"' EXIT
cargo test --locked -p flotilla-translate --features corpus --lib corpus_tests:: | tee "$log"
grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$log" ||
  { echo "conformance: no corpus test ran (crates/translate/src/corpus_tests.rs)" >&2; exit 1; }
echo "conformance: corpus cargo tests done in $(( $(date +%s) - start ))s"

# The whole table, one line per test and the pass count; exits non-zero when a test listed in
# the ratchet does not pass.
FLOTILLA_BIN="$target/debug/flotilla" "$target/debug/flotilla-conformance"
echo "conformance: Gateway API conformance done in $(( $(date +%s) - start ))s"
