#!/usr/bin/env bash
# `make vuln`: govulncheck over every module of the workspace against an offline vulnerability
# database. Fails when any module reaches a known vulnerable function, its own code's or the
# standard library's of the toolchain that builds it (GOTOOLCHAIN below).
#
# The database is built from the golang.org/x/vulndb module (its data/osv files, indexed by its
# cmd/indexdb), fetched through the Go module proxy like any module; so the check needs no network
# besides that proxy and gives the same answer on every machine for one pinned vulndb version.
# Move the pin (VULNDB_VERSION in scripts/tools.sh) to learn of newer vulnerabilities; the newest:
#   GOFLAGS='' GOWORK=off go list -m golang.org/x/vulndb@latest
#
# The database is built once per vulndb version under .run/vulndb/<version> (~40 MB, ~10 s);
# govulncheck and indexdb are installed by scripts/tools.sh. Measured on a 2-core machine: cold
# (no .run, empty module and build caches, toolchain not yet fetched) 189 s, of which ~155 s
# building the two tools; warm 11-17 s, the three scans.
#
# Usage: scripts/vuln.sh [MODULE...]    default: proto core encryption-service
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
modules=("$@")
[[ ${#modules[@]} -gt 0 ]] || modules=(proto core encryption-service)

start=${SECONDS}
scripts/tools.sh govulncheck indexdb
bin_dir="$(scripts/tools.sh --print)"
version="$(scripts/tools.sh --vulndb-version)"
db="${repo_root}/.run/vulndb/${version}"

mkdir -p "$(dirname "${db}")"
# shellcheck source-path=SCRIPTDIR source=lib/lock.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/lock.sh"

lock "$(dirname "${db}")/.lock" 8 vuln # one build of the database at a time
if [[ ! -f "${db}/.complete" ]]; then
  echo "vuln: building the vulnerability database from golang.org/x/vulndb@${version}" >&2
  built=${SECONDS}
  # Outside the workspace: this is a download, not a dependency of the modules.
  src="$(cd "${bin_dir}" && GOFLAGS='' GOWORK=off go mod download -json "golang.org/x/vulndb@${version}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  if [[ -z "${src}" || ! -d "${src}/data/osv" ]]; then
    echo "vuln: golang.org/x/vulndb@${version} has no data/osv directory (at '${src}')" >&2
    exit 1
  fi
  rm -rf "${db}.tmp"
  "${bin_dir}/indexdb" -vulns "${src}/data/osv" -out "${db}.tmp"
  touch "${db}.tmp/.complete"
  rm -rf "${db}"
  mv "${db}.tmp" "${db}"
  echo "vuln: database ready in $((SECONDS - built))s" >&2
fi

# A scan against an empty or broken database would find nothing and pass: check that the index
# knows the standard library and thousands of entries before trusting a clean result.
entries="$(grep -o '"id":' "${db}/index/vulns.json" | wc -l)"
if ! grep -q '"path":"stdlib"' "${db}/index/modules.json" || [[ "${entries}" -lt 1000 ]]; then
  echo "vuln: the database at ${db} looks incomplete (${entries} entries); remove it and retry" >&2
  exit 1
fi

failed=()
for m in "${modules[@]}"; do
  echo "vuln: govulncheck ${m} (${entries} known vulnerabilities, $(go env GOVERSION))"
  set +e
  (cd "${repo_root}/${m}" && "${bin_dir}/govulncheck" -db "file://${db}" ./...)
  rc=$?
  set -e
  case ${rc} in
    0) ;;
    3) failed+=("${m}: reachable vulnerabilities") ;;
    *) failed+=("${m}: govulncheck failed (exit ${rc})") ;;
  esac
done

if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'vuln: FAILED %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "vuln: no reachable vulnerabilities in ${modules[*]} ($((SECONDS - start))s)"
