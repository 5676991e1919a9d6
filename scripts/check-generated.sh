#!/usr/bin/env bash
# Regenerates the contracts and fails if the checked-in tree differs.
set -euo pipefail
cd "$(dirname "$0")/.."
pnpm run --silent generate
if ! git diff --quiet --exit-code -- packages/contracts/src/gen || [ -n "$(git ls-files --others --exclude-standard packages/contracts/src/gen)" ]; then
  echo "generated contracts are out of date: run 'pnpm run generate' and commit packages/contracts/src/gen" >&2
  git status --short -- packages/contracts/src/gen >&2
  exit 1
fi
echo "generated contracts match proto/"
