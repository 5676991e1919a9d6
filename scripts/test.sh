#!/usr/bin/env bash
# Every check and test. Static checks run first; the tests run even when a check
# failed, so one run reports everything. Exit status is non-zero if anything failed.
# Writes .vitest-results.json for .ci/run's summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

failed_checks=()
check() {
  local name=$1; shift
  printf '\n== %s\n' "$name"
  if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failed_checks+=("$name"); fi
}

check "buf lint" pnpm exec buf lint
check "generated contracts match proto" bash scripts/check-generated.sh
check "typecheck" pnpm exec tsc -p tsconfig.json
check "lint" pnpm exec eslint --max-warnings 0 .
check "format" pnpm exec prettier --check --log-level warn .

printf '\n== tests\n'
rm -f .vitest-results.json
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json=.vitest-results.json "$@"
tests_status=$?

printf '%s\n' "${failed_checks[@]/#/failed check: }" | grep -v '^failed check: $' >&2 || true
[ ${#failed_checks[@]} -eq 0 ] && [ $tests_status -eq 0 ]
