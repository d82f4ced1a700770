#!/usr/bin/env bash
# `bun run check`, the tests' part: no test awaits bun's `.rejects` matcher.
# On bun 1.4.5 it spins the CPU without end on a promise that never settles,
# so a test whose mechanism stops answering hangs CI instead of failing.
# Use test/support/rejection.ts: expect(await rejection(p)).toMatchObject(...).
set -uo pipefail
cd "$(dirname "$0")/.."
if found=$(grep -rnE '\)\s*\.rejects\.' test --include='*.ts'); then
  echo "tests use bun's .rejects matcher; use rejection() from test/support/rejection.ts:"
  echo "$found"
  exit 1
fi
