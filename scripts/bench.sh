#!/usr/bin/env bash
# Runs the benchmarks under bench/; each prints its own figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
what=${1:-bus}
case "$what" in
  bus) exec pnpm exec tsx bench/bus-ceiling.ts ;;
  e2e) exec pnpm exec tsx bench/end-to-end.ts ;;
  identity) exec pnpm exec tsx bench/identity-drain.ts ;;
  lookup) exec pnpm exec tsx bench/profile-lookup.ts ;;
  suppression) exec pnpm exec tsx bench/suppression.ts ;;
  dispatch) exec pnpm exec tsx bench/dispatch.ts ;;
  timers) exec pnpm exec tsx bench/timers.ts ;;
  segmentation) exec pnpm exec tsx bench/segmentation.ts ;;
  floor) exec pnpm exec tsx bench/stage-floor.ts ;;
  *) echo "unknown benchmark '$what' (see bench/README.md)" >&2; exit 2 ;;
esac
