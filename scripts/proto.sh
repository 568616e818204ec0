#!/usr/bin/env bash
# Offline, pinned protobuf pipeline for proto/ (buf v2 + local plugins from .run/bin).
#
# Usage: scripts/proto.sh gen     format (writes), lint, regenerate proto/gen, go build the proto module
#        scripts/proto.sh check   read-only: format diff, lint, generated code up to date, breaking changes
#        scripts/proto.sh lint    read-only: format diff and lint
#        scripts/proto.sh fmt     format the .proto files in place
#
# Generated code (committed): proto/gen/custos/<pkg>/v1/*.pb.go, *_grpc.pb.go, *.pb.gw.go
# and proto/gen/openapiv2/custos/<pkg>/v1/*.swagger.json.
#
# `check` compares a fresh generation with the proto/gen in the work tree (in CI's
# fresh clone, the committed one), and runs `buf breaking` against a baseline:
#   PROTO_BREAKING_AGAINST=<git ref>  compare with that commit's proto/ (e.g. main, HEAD~3)
#   PROTO_BREAKING_AGAINST=none       skip the breaking-change check
#   unset: the merge-base with branch `main` (refs/heads/main, else refs/remotes/origin/main,
#          as CI checkouts on a detached HEAD have it) when HEAD is not main; else HEAD when
#          proto/ has uncommitted changes; else HEAD~1 (also, outside CI, without any main).
#          Skipped, with a message, when that commit holds no .proto files under proto/custos/.
#          With CI set (as CI systems do), finding no baseline at all fails the check instead
#          of skipping it: fetch main, and enough history for the merge base.
# An intended breaking change passes when a commit between the baseline and HEAD
# carries the trailer line `Proto-Breaking: <reason>` in its message.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto_dir="${repo_root}/proto"
gen_dir="${proto_dir}/gen"

die() {
  echo "proto: $*" >&2
  exit 1
}

usage() {
  sed -n '4,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

tmp_dirs=()
cleanup() {
  local d
  for d in "${tmp_dirs[@]+"${tmp_dirs[@]}"}"; do
    rm -rf "${d}"
  done
}
trap cleanup EXIT

made_tmp=""
make_tmp() { # sets made_tmp to a new temporary directory, removed on exit (not in a subshell)
  made_tmp="$(mktemp -d "${TMPDIR:-/tmp}/custos-proto.XXXXXX")"
  tmp_dirs+=("${made_tmp}")
}

setup_tools() {
  "${repo_root}/scripts/proto-tools.sh"
  PATH="$("${repo_root}/scripts/proto-tools.sh" --print):${PATH}"
  export PATH
  # buf keeps a cache (remote modules, never used here: no deps); keep it in .run.
  export BUF_CACHE_DIR="${repo_root}/.run/buf-cache"
}

have_protos() { # dir -> true if dir/custos holds at least one .proto file
  [[ -d "$1/custos" ]] && [[ -n "$(find "$1/custos" -name '*.proto' -print -quit)" ]]
}

# Format only our contracts: the vendored third_party/ files stay byte-for-byte as upstream.
format_check() {
  if ! buf format -d --exit-code --path custos; then
    die ".proto files are not formatted (diff above): run make proto"
  fi
}

lint() {
  buf lint || die "buf lint failed (see above)"
}

# generate OUT: runs buf generate with proto/buf.gen.yaml, output under OUT/gen
# (deleted first: proto/gen holds nothing but generated code).
generate() {
  local out="$1"
  rm -rf "${out}/gen"
  buf generate --template buf.gen.yaml --output "${out}"
}

cmd_fmt() {
  setup_tools
  cd "${proto_dir}"
  buf format -w --path custos
}

cmd_lint() {
  setup_tools
  cd "${proto_dir}"
  have_protos . || {
    echo "proto: no .proto files under proto/custos/: nothing to lint"
    return 0
  }
  format_check
  lint
}

cmd_gen() {
  setup_tools
  cd "${proto_dir}"
  have_protos . || die "no .proto files under proto/custos/"
  buf format -w --path custos
  lint
  generate "${proto_dir}"
  (cd "${proto_dir}" && go build ./...)
  echo "proto: generated code is in proto/gen/"
}

check_generated() {
  local tmp
  make_tmp
  tmp="${made_tmp}"
  generate "${tmp}"
  # proto/gen is wholly generator-owned (buf.gen.yaml has clean: true): compare all of it.
  if ! diff -r -q "${tmp}/gen" "${gen_dir}" >&2; then
    die "generated code is stale: run make proto (files above differ between a fresh generation and proto/gen)"
  fi
}

# in_ci: whether a CI system runs this (they set CI, to "true" or "1").
in_ci() { [[ -n "${CI:-}" && "${CI}" != false && "${CI}" != 0 ]]; }

# main_commit -> the commit of branch main: the local branch, else the remote-tracking one (CI
# checkouts often have only origin/main, on a detached HEAD); fails when neither exists.
main_commit() {
  local ref
  for ref in refs/heads/main refs/remotes/origin/main; do
    if git -C "${repo_root}" rev-parse --verify -q "${ref}^{commit}"; then
      return 0
    fi
  done
  return 1
}

# find_baseline: sets baseline to the commit to compare with, or leaves it empty and says why in
# no_baseline.
find_baseline() {
  baseline=""
  no_baseline=""
  if [[ -n "${PROTO_BREAKING_AGAINST:-}" ]]; then
    if [[ "${PROTO_BREAKING_AGAINST}" == "none" ]]; then
      no_baseline="PROTO_BREAKING_AGAINST=none"
    else
      baseline="${PROTO_BREAKING_AGAINST}"
    fi
    return 0
  fi
  if ! git -C "${repo_root}" rev-parse --verify -q HEAD >/dev/null; then
    no_baseline="no git commit to compare with"
    return 0
  fi
  local head main=""
  head="$(git -C "${repo_root}" rev-parse HEAD)"
  main="$(main_commit)" || true
  if [[ -n "${main}" && "${main}" != "${head}" ]]; then
    baseline="$(git -C "${repo_root}" merge-base HEAD "${main}")" ||
      no_baseline="HEAD and main have no common commit in this clone (a shallow clone? git fetch --unshallow)"
    return 0
  fi
  if [[ -z "${main}" ]] && in_ci; then
    no_baseline="no branch main: neither refs/heads/main nor refs/remotes/origin/main exists (git fetch origin main)"
    return 0
  fi
  # On main itself: what the work tree changes, else the last commit.
  if [[ -n "$(git -C "${repo_root}" status --porcelain -- proto/custos proto/buf.yaml)" ]]; then
    baseline=HEAD
    return 0
  fi
  baseline="$(git -C "${repo_root}" rev-parse --verify -q 'HEAD~1')" ||
    no_baseline="HEAD has no parent in this clone (a shallow clone? git fetch --deepen=1)"
}

check_breaking() {
  local ref
  find_baseline
  ref="${baseline}"
  if [[ -z "${ref}" ]]; then
    # In CI a skipped check would pass unseen: only an explicit PROTO_BREAKING_AGAINST=none may skip.
    if in_ci && [[ "${PROTO_BREAKING_AGAINST:-}" != "none" ]]; then
      die "no baseline for the breaking-change check (CI=${CI}): ${no_baseline}." \
        "Fetch main with enough history, or set PROTO_BREAKING_AGAINST=<ref> (none skips the check)"
    fi
    breaking_result="breaking-change check skipped: ${no_baseline}"
    return 0
  fi
  git -C "${repo_root}" rev-parse --verify -q "${ref}^{commit}" >/dev/null ||
    die "PROTO_BREAKING_AGAINST=${ref} is not a commit"
  local tmp base
  make_tmp
  tmp="${made_tmp}"
  if git -C "${repo_root}" cat-file -e "${ref}:proto" 2>/dev/null; then
    git -C "${repo_root}" archive "${ref}" proto | tar -x -C "${tmp}"
  fi
  base="${tmp}/proto"
  if ! have_protos "${base}"; then
    breaking_result="breaking-change check skipped: ${ref} has no .proto files under proto/custos/"
    return 0
  fi
  # A baseline from before buf.yaml or the vendored imports existed still has to compile.
  [[ -f "${base}/buf.yaml" ]] || cp "${proto_dir}/buf.yaml" "${base}/buf.yaml"
  [[ -d "${base}/third_party" ]] || cp -r "${proto_dir}/third_party" "${base}/third_party"
  rm -rf "${base}/gen"
  if buf breaking --against "${base}"; then
    breaking_result="no breaking change against ${ref}"
    return 0
  fi
  # An intended break is declared by a commit trailer between the baseline and HEAD.
  if git -C "${repo_root}" log --format=%B "${ref}..HEAD" 2>/dev/null | grep -q '^Proto-Breaking: *[^ ]'; then
    echo "proto: breaking change against ${ref} accepted: declared by a 'Proto-Breaking:' commit trailer" >&2
    breaking_result="breaking change against ${ref} declared by a Proto-Breaking trailer"
    return 0
  fi
  die "breaking change against ${ref} (see above). If intended, commit it with a trailer line" \
    "'Proto-Breaking: <reason>' in the message, or run with PROTO_BREAKING_AGAINST=none"
}

cmd_check() {
  setup_tools
  cd "${proto_dir}"
  if ! have_protos .; then
    [[ ! -d "${gen_dir}/custos" ]] || die "proto/gen/custos exists but there are no .proto files under proto/custos/"
    echo "proto: no .proto files under proto/custos/: nothing to check"
    return 0
  fi
  format_check
  lint
  check_generated
  breaking_result=""
  check_breaking
  echo "proto: check passed: formatted, lint clean, generated code up to date; ${breaking_result}"
}

case "${1:-}" in
  gen) cmd_gen ;;
  check) cmd_check ;;
  lint) cmd_lint ;;
  fmt) cmd_fmt ;;
  *) usage ;;
esac
