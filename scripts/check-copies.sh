#!/usr/bin/env bash
# check-copies.sh - the infrastructure packages both services carry as copies (see docs/design.md,
# "Shape") must stay identical apart from their module's import path: a fix made in one copy and
# forgotten in the other fails this check (make lint).
#
# Usage: scripts/check-copies.sh     exit 0 when every pair matches, 1 listing those that differ
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Whole packages, and single files of packages that otherwise differ on purpose.
packages=(mtls server testcerts)
files=(config/env_test.go postgres/tx.go postgres/migrate.go postgres/migrate_test.go postgres/pool.go config/env.go testdb/testdb.go telemetry/metrics.go telemetry/tracing.go)

normalize() { sed -e 's#custos/encryption-service/internal#custos/X/internal#g' -e 's#custos/core/internal#custos/X/internal#g' "$1"; }

bad=0
compare() {
  local rel="$1" es="encryption-service/internal/$1" core="core/internal/$1"
  if [[ ! -f "$es" || ! -f "$core" ]]; then
    echo "check-copies: $rel exists in only one module" >&2
    bad=1
    return
  fi
  if ! diff -q <(normalize "$es") <(normalize "$core") >/dev/null; then
    echo "check-copies: $es and $core differ (beyond import paths): make the same change in both" >&2
    bad=1
  fi
}

for p in "${packages[@]}"; do
  while IFS= read -r f; do
    compare "$p/${f#./}"
  done < <(cd "encryption-service/internal/$p" && find . -name '*.go' | sort)
  while IFS= read -r f; do
    [[ -f "encryption-service/internal/$p/${f#./}" ]] || { echo "check-copies: core/internal/$p/${f#./} exists in only one module" >&2; bad=1; }
  done < <(cd "core/internal/$p" && find . -name '*.go' | sort)
done
for f in "${files[@]}"; do
  compare "$f"
done
exit "$bad"
