#!/usr/bin/env bash
# dev-postgres.sh - find (or start) a PostgreSQL server for local development and tests.
#
# Usage:
#   scripts/dev-postgres.sh [url]                  print ONE line on stdout: the URL of a server that answers
#   scripts/dev-postgres.sh createdb NAME [SERVER] ensure database NAME exists on that server (or on
#                                                  SERVER, a URL `url` printed), print its URL
#   scripts/dev-postgres.sh dropdb NAME [SERVER]   drop database NAME on that server (or SERVER) if it exists
#   scripts/dev-postgres.sh status                 exit 0 when the throwaway cluster runs, else non-zero
#   scripts/dev-postgres.sh stop                   stop the throwaway cluster (no-op if not running)
#   scripts/dev-postgres.sh --help
#
# Server selection (first that works):
#   a) $DATABASE_URL, if set and reachable
#   b) 127.0.0.1:5432 as user postgres without a password
#   c) a throwaway cluster in <repo>/.run/postgres (data dir, log in .run/postgres/log) on
#      127.0.0.1:55432, trust auth, user postgres; created with the system's initdb on first
#      use, started if stopped, reused afterwards. When run as root, initdb/pg_ctl run as
#      the `postgres` OS user.
#   d) otherwise: exit 1 with installation hints.
#
# Environment:
#   DATABASE_URL                    candidate a)
#   CUSTOS_DEV_PG_PORT              port of the throwaway cluster (default 55432)
#   CUSTOS_DEV_PG_DIR               data dir of the throwaway cluster (default <repo>/.run/postgres)
#   CUSTOS_DEV_PG_FORCE_THROWAWAY=1 skip a) and b), always use the throwaway cluster
#
# Examples:
#   export DATABASE_URL="$(scripts/dev-postgres.sh)"
#   TEST_DATABASE_URL="$(scripts/dev-postgres.sh createdb custos_test)" go test ./...
#
# stdout carries only the URL; all diagnostics go to stderr.
# Exit codes: 0 success, 1 no server / failure, 2 usage error.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_DIR="${CUSTOS_DEV_PG_DIR:-${REPO_ROOT}/.run/postgres}"
PG_PORT="${CUSTOS_DEV_PG_PORT:-55432}"
PG_OS_USER=postgres
LOCAL_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-3}"

log() { printf 'dev-postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
have() { command -v "$1" >/dev/null 2>&1; }

if ! [[ "$PG_PORT" =~ ^[0-9]+$ ]] || ((PG_PORT < 1 || PG_PORT > 65535)); then
  log "CUSTOS_DEV_PG_PORT='$PG_PORT' is not a valid port"; exit 2
fi

install_hint() {
  cat >&2 <<'EOF'
dev-postgres: no PostgreSQL server available. Either
  - install PostgreSQL:  Debian/Ubuntu: sudo apt-get install -y postgresql
                         macOS:         brew install postgresql@16
    (this script then runs a throwaway cluster in .run/postgres by itself), or
  - point DATABASE_URL at a server you have, e.g.
    export DATABASE_URL='postgres://user:password@host:5432/dbname?sslmode=disable'
EOF
}

# --- reachability -----------------------------------------------------------

# tcp_probe URL: bash /dev/tcp check of the first host:port of a postgres:// URL.
tcp_probe() {
  local rest="${1#*://}" hostport host port
  rest="${rest%%[/?]*}"          # authority
  hostport="${rest##*@}"          # drop user:password@
  hostport="${hostport%%,*}"      # first host of a multi-host URL
  if [[ "$hostport" == \[* ]]; then # [ipv6]:port
    host="${hostport#[}"; host="${host%%]*}"; port="${hostport##*]}"; port="${port#:}"
  else
    host="${hostport%%:*}"; port=""
    [[ "$hostport" == *:* ]] && port="${hostport##*:}"
  fi
  host="${host:-127.0.0.1}"; port="${port:-5432}"
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  if have timeout; then
    timeout 3 bash -c ': <"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
  else
    bash -c ': <"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
  fi
}

# reachable URL: the server answers (pg_isready, else psql, else a TCP probe).
reachable() {
  if have pg_isready; then
    pg_isready -q -t 3 -d "$1"
  elif have psql; then
    psql -w -X -q -At -d "$1" -c 'select 1' >/dev/null 2>&1
  else
    tcp_probe "$1"
  fi
}

# can_login URL: with psql available, also check that we can log in (no password prompt).
can_login() {
  have psql || return 0
  psql -w -X -q -At -d "$1" -c 'select 1' >/dev/null 2>&1
}

# --- throwaway cluster -------------------------------------------------------

PG_BIN=""
find_pg_bin() {
  local d cands=()
  if have pg_config; then cands+=("$(pg_config --bindir 2>/dev/null || true)"); fi
  # Debian/Ubuntu layout, newest major first; then Homebrew keg-only installs.
  while IFS= read -r d; do cands+=("$d"); done < <(
    for d in /usr/lib/postgresql/*/bin /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin; do
      [[ -d "$d" ]] && printf '%s\n' "$d"
    done |
      awk -F/ '{ for (i = 1; i <= NF; i++) if ($i ~ /^(postgresql@)?[0-9]+$/) { v = $i; sub(/^postgresql@/, "", v); print v "\t" $0 } }' |
      sort -t "$(printf '\t')" -k1,1nr | cut -f2-
  )
  if have initdb; then cands+=("$(dirname "$(command -v initdb)")"); fi
  for d in "${cands[@]}"; do
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then PG_BIN="$d"; return 0; fi
  done
  return 1
}

# as_pg_user CMD...: run CMD as the postgres OS user when we are root, else as ourselves.
as_pg_user() {
  if ((EUID != 0)); then
    (cd / && "$@")
  elif have runuser; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd / && su "$PG_OS_USER" -s /bin/sh -c "$(printf '%q ' "$@")")
  fi
}

throwaway_url() { printf 'postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable' "$1"; }

# Port the running cluster actually listens on (line 4 of postmaster.pid).
running_port() { sed -n '4p' "$PG_DIR/postmaster.pid" 2>/dev/null; }

cluster_running() {
  [[ -f "$PG_DIR/PG_VERSION" ]] || return 1
  as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1
}

# Serialize concurrent invocations (parallel test runs) where flock exists.
take_lock() {
  have flock || return 0
  mkdir -p "$(dirname "$PG_DIR")"
  exec 9>"${PG_DIR}.lock"
  flock -w 120 9 || die "timed out waiting for another dev-postgres.sh"
}

start_throwaway() {
  # pg_ctl -o passes the data directory (the socket's) through a shell: check before creating anything.
  [[ "$PG_DIR" =~ ^[-A-Za-z0-9_./@+]+$ ]] ||
    die "the throwaway cluster's directory '$PG_DIR' has characters (a space?) pg_ctl -o cannot pass safely; set CUSTOS_DEV_PG_DIR to a simpler path, e.g. /tmp/custos-pg"
  find_pg_bin || return 1
  log "using PostgreSQL binaries in $PG_BIN"
  if ((EUID == 0)); then
    id "$PG_OS_USER" >/dev/null 2>&1 ||
      die "running as root but there is no '$PG_OS_USER' OS user to run the server (PostgreSQL refuses to run as root)"
  fi
  take_lock

  if [[ -f "$PG_DIR/PG_VERSION" ]]; then
    local have_ver bin_ver
    have_ver="$(cat "$PG_DIR/PG_VERSION")"
    bin_ver="$("$PG_BIN/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
    [[ "$have_ver" == "$bin_ver" ]] ||
      die "$PG_DIR was created by PostgreSQL $have_ver but the binaries are $bin_ver; remove it (scripts/dev-postgres.sh stop; rm -rf '$PG_DIR')"
  else
    if [[ -d "$PG_DIR" && -n "$(ls -A "$PG_DIR" 2>/dev/null)" ]]; then
      die "$PG_DIR exists, is not empty and is not a PostgreSQL cluster; remove it"
    fi
    log "creating throwaway cluster in $PG_DIR"
    mkdir -p "$PG_DIR"
    chmod 0700 "$PG_DIR"
    if ((EUID == 0)); then
      chown "$PG_OS_USER": "$PG_DIR"
      as_pg_user test -w "$PG_DIR" ||
        die "the '$PG_OS_USER' user cannot reach $PG_DIR (a parent directory is not traversable); set CUSTOS_DEV_PG_DIR to a directory elsewhere, e.g. /tmp/custos-pg"
    fi
    local out
    if ! out="$(as_pg_user "$PG_BIN/initdb" -D "$PG_DIR" -U postgres -A trust --no-sync -E UTF8 2>&1)"; then
      printf '%s\n' "$out" >&2
      die "initdb failed"
    fi
  fi

  if cluster_running; then
    local p
    p="$(running_port)"
    log "throwaway cluster already running on port ${p:-?}"
    [[ "$p" == "$PG_PORT" ]] || log "note: it runs on port $p, not CUSTOS_DEV_PG_PORT=$PG_PORT; run 'scripts/dev-postgres.sh stop' to change"
  else
    # The Unix socket lives in the data dir; sockets paths are limited to ~107 bytes.
    local sock_opt="-k $PG_DIR"
    if ((${#PG_DIR} + 18 > 107)); then
      log "path too long for a Unix socket, TCP only"
      sock_opt="-c unix_socket_directories=''"
    fi
    log "starting throwaway cluster on 127.0.0.1:$PG_PORT (log: $PG_DIR/log)"
    # 9>&-: the server must not inherit (and keep holding) our lock file descriptor.
    if ! as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/log" -w -t 60 \
      -o "-p $PG_PORT $sock_opt -c listen_addresses=127.0.0.1 -c fsync=off" start >&2 9>&-; then
      tail -n 20 "$PG_DIR/log" >&2 2>/dev/null || true
      die "could not start the throwaway cluster (port $PG_PORT busy? try CUSTOS_DEV_PG_PORT=...)"
    fi
  fi
  PG_PORT="$(running_port)"
  PG_PORT="${PG_PORT:-${CUSTOS_DEV_PG_PORT:-55432}}"
  reachable "$(throwaway_url "$PG_PORT")" || die "throwaway cluster started but does not answer on 127.0.0.1:$PG_PORT"
}

# --- server selection --------------------------------------------------------

# pick_server: sets SERVER_URL or exits 1.
SERVER_URL=""
pick_server() {
  if [[ "${CUSTOS_DEV_PG_FORCE_THROWAWAY:-0}" != 1 ]]; then
    if [[ -n "${DATABASE_URL:-}" ]]; then
      if reachable "$DATABASE_URL" && can_login "$DATABASE_URL"; then
        log "using \$DATABASE_URL"
        SERVER_URL="$DATABASE_URL"; return 0
      fi
      log "warning: \$DATABASE_URL is set but the server does not answer or refuses the login; trying others"
    fi
    if reachable "$LOCAL_URL" && can_login "$LOCAL_URL"; then
      log "using the server on 127.0.0.1:5432 (user postgres)"
      SERVER_URL="$LOCAL_URL"; return 0
    fi
  else
    log "CUSTOS_DEV_PG_FORCE_THROWAWAY=1: skipping \$DATABASE_URL and 127.0.0.1:5432"
  fi
  if start_throwaway; then
    SERVER_URL="$(throwaway_url "$PG_PORT")"; return 0
  fi
  install_hint
  exit 1
}

# use_server URL: sets SERVER_URL to URL, which must answer and let us log in (no fallback: the
# caller recorded it and means that server).
use_server() {
  if ! reachable "$1" || ! can_login "$1"; then
    die "the given server does not answer or refuses the login"
  fi
  SERVER_URL="$1"
}

# url_with_db URL NAME: same server, database NAME.
url_with_db() {
  local url="$1" name="$2" enc="" c i query="" base LC_ALL=C # byte-wise: UTF-8 -> %XX%XX
  for ((i = 0; i < ${#name}; i++)); do
    c="${name:i:1}"
    case "$c" in [A-Za-z0-9._~-]) enc+="$c" ;; *) enc+="$(printf '%%%02X' "'$c")" ;; esac
  done
  if [[ "$url" =~ ^postgres(ql)?:// ]]; then
    [[ "$url" == *\?* ]] && query="?${url#*\?}"
    base="${url%%\?*}"
    local scheme="${base%%://*}://" rest="${base#*://}"
    printf '%s%s/%s%s' "$scheme" "${rest%%/*}" "$enc" "$query"
  else
    # key=value connection string: a later dbname overrides an earlier one.
    printf "%s dbname='%s'" "$url" "${name//\'/\\\'}"
  fi
}

cmd_createdb() {
  local name="$1" server="${2:-}"
  [[ -n "$name" && ${#name} -le 63 ]] || { log "database name must be 1..63 bytes"; exit 2; }
  have psql || die "psql not found; createdb needs the PostgreSQL client (Debian/Ubuntu: apt-get install -y postgresql-client; macOS: brew install libpq)"
  if [[ -n "$server" ]]; then use_server "$server"; else pick_server; fi
  local exists
  exists="$(printf '%s\n' "select 1 from pg_database where datname = :'name';" |
    psql -w -X -q -At -v ON_ERROR_STOP=1 -v name="$name" -d "$SERVER_URL" -f -)" ||
    die "could not query pg_database"
  if [[ "$exists" == 1 ]]; then
    log "database '$name' already exists"
  elif printf '%s\n' 'create database :"name";' |
    psql -w -X -q -v ON_ERROR_STOP=1 -v name="$name" -d "$SERVER_URL" -f - >/dev/null; then
    log "created database '$name'"
  else
    # A concurrent run may have created it in the meantime.
    exists="$(printf '%s\n' "select 1 from pg_database where datname = :'name';" |
      psql -w -X -q -At -v name="$name" -d "$SERVER_URL" -f - 2>/dev/null || true)"
    [[ "$exists" == 1 ]] || die "could not create database '$name'"
  fi
  url_with_db "$SERVER_URL" "$name"
  echo
}

# cmd_dropdb NAME [SERVER]: drop database NAME on the server (SERVER when given) if it exists.
cmd_dropdb() {
  local name="$1" server="${2:-}"
  [[ -n "$name" && ${#name} -le 63 ]] || { log "database name must be 1..63 bytes"; exit 2; }
  have psql || die "psql not found; dropdb needs the PostgreSQL client"
  if [[ -n "$server" ]]; then use_server "$server"; else pick_server; fi
  printf '%s\n' 'drop database if exists :"name";' |
    psql -w -X -q -v ON_ERROR_STOP=1 -v name="$name" -d "$SERVER_URL" -f - >/dev/null ||
    die "could not drop database '$name' (are services still connected to it?)"
  log "dropped database '$name'"
}

cmd_status() {
  [[ -f "$PG_DIR/PG_VERSION" ]] && find_pg_bin && cluster_running
}

cmd_stop() {
  if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
    log "no throwaway cluster in $PG_DIR, nothing to stop"; return 0
  fi
  find_pg_bin || die "cannot find pg_ctl to stop the cluster in $PG_DIR"
  if cluster_running; then
    as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DIR" -m fast -w stop >&2 || die "pg_ctl stop failed"
    log "stopped the throwaway cluster in $PG_DIR"
  else
    log "throwaway cluster in $PG_DIR is not running, nothing to stop"
  fi
}

case "${1:-url}" in
  url)
    (($# <= 1)) || { usage >&2; exit 2; }
    pick_server
    printf '%s\n' "$SERVER_URL" ;;
  createdb)
    (($# == 2 || $# == 3)) || { log "usage: $0 createdb NAME [SERVER_URL]"; exit 2; }
    cmd_createdb "$2" "${3:-}" ;;
  dropdb)
    (($# == 2 || $# == 3)) || { log "usage: $0 dropdb NAME [SERVER_URL]"; exit 2; }
    cmd_dropdb "$2" "${3:-}" ;;
  status)
    (($# == 1)) || { usage >&2; exit 2; }
    cmd_status ;;
  stop)
    (($# == 1)) || { usage >&2; exit 2; }
    cmd_stop ;;
  -h | --help | help) usage ;;
  *) log "unknown command: $1"; usage >&2; exit 2 ;;
esac
