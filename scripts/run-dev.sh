#!/usr/bin/env bash
# run-dev.sh - start the whole platform locally (what `make run` does).
#
#   1. dev certificates in certs/dev/ (scripts/gen-dev-certs.sh, only when missing or expiring)
#   2. a PostgreSQL (scripts/dev-postgres.sh) with a database `custos` shared by both services,
#      each in its own schema (`encryption`, `core`)
#   3. builds both binaries into bin/ and starts them; logs go to .run/logs/
#   4. writes .run/dev.env (shell KEY='value' lines, for `source`) for clients, tests and the CLI
#   5. prints how to try the API, and keeps running until Ctrl-C, then stops what it started: both
#      services and, when this run started it, the throwaway PostgreSQL cluster
#
# Environment (all optional):
#   CUSTOS_DEV_ES_HTTP_PORT (9443)  CUSTOS_DEV_ES_GRPC_PORT (9444)
#   CUSTOS_DEV_CORE_HTTP_PORT (8443) CUSTOS_DEV_CORE_GRPC_PORT (8444)
#   CUSTOS_DEV_ES_METRICS_PORT (9445) CUSTOS_DEV_CORE_METRICS_PORT (8445)
#   CUSTOS_DEV_DATABASE  database name (custos)
#   CUSTOS_DEV_RESET=1   drop and recreate that database when it holds another checkout's data
#   DATABASE_URL         a server to use instead of the local one (see scripts/dev-postgres.sh)
#
# The database is bound to the local secrets in .run/ (its comment records their fingerprint):
# what one set of keys encrypted, another cannot read. .run/dev-database records which database on
# which server that is; `scripts/run-dev.sh clean-db` (run by `make clean`, which deletes the keys)
# drops exactly that one, on that server, when its comment still names these keys.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
run_dir="$repo/.run"
logs="$run_dir/logs"
certs="$repo/certs/dev"
mkdir -p "$logs"
dbname="${CUSTOS_DEV_DATABASE:-custos}"
# Lines: the server URL the database was created through, its name, its URL.
db_record="$run_dir/dev-database"

# keys_fingerprint: a digest of the local master keys, for the database's comment (not secret).
keys_fingerprint() {
  cat "$run_dir/dev-master-keys" "$run_dir/dev-core-secret-keys" | openssl dgst -sha256 -r | cut -c1-16
}

# db_comment URL: the comment of the database URL points at ("" if none).
db_comment() {
  printf '%s\n' "select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database where datname = current_database();" |
    psql -w -X -q -At -v ON_ERROR_STOP=1 -d "$1" -f -
}

if [[ "${1:-}" == clean-db ]]; then
  # Drop the dev database if it holds this checkout's data (its keys are about to be deleted): the
  # database .run/ recorded, on the server it recorded, and only once its comment shows these keys'
  # fingerprint; never what CUSTOS_DEV_DATABASE or the server found today would name.
  [[ -s "$run_dir/dev-master-keys" && -s "$run_dir/dev-core-secret-keys" ]] || exit 0
  if [[ ! -s "$db_record" ]]; then
    if [[ -s "$run_dir/dev.env" ]]; then
      echo "make clean: .run/ does not record which database 'make run' used (it predates the record); drop it yourself if it is this checkout's" >&2
    fi
    exit 0
  fi
  { IFS= read -r server; IFS= read -r name; IFS= read -r url; } <"$db_record"
  answered=0
  comment="$(db_comment "$url" 2>/dev/null)" && answered=1
  # A throwaway cluster that Ctrl-C of `make run` stopped is started again to drop the database: its
  # data directory may live outside .run/ (CUSTOS_DEV_PG_DIR) and outlive the keys. `make clean`
  # stops it afterwards.
  if ((answered == 0)) && [[ -f "${CUSTOS_DEV_PG_DIR:-$run_dir/postgres}/PG_VERSION" ]] &&
    throwaway="$(CUSTOS_DEV_PG_FORCE_THROWAWAY=1 scripts/dev-postgres.sh url 2>/dev/null)" &&
    [[ "$throwaway" == "$server" ]]; then
    comment="$(db_comment "$url" 2>/dev/null)" && answered=1
  fi
  if ((answered == 0)); then
    echo "make clean: database '$name' does not answer (its server stopped?); not dropped" >&2
  elif [[ "$comment" == "custos dev $(keys_fingerprint)" ]]; then
    scripts/dev-postgres.sh dropdb "$name" "$server"
  else
    echo "make clean: database '$name' no longer holds this checkout's data; not dropped" >&2
  fi
  exit 0
fi

es_http="${CUSTOS_DEV_ES_HTTP_PORT:-9443}"
es_grpc="${CUSTOS_DEV_ES_GRPC_PORT:-9444}"
core_http="${CUSTOS_DEV_CORE_HTTP_PORT:-8443}"
core_grpc="${CUSTOS_DEV_CORE_GRPC_PORT:-8444}"
es_metrics="${CUSTOS_DEV_ES_METRICS_PORT:-9445}"
core_metrics="${CUSTOS_DEV_CORE_METRICS_PORT:-8445}"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'make run: %s\n' "$*" >&2; exit 1; }
# q VALUE: VALUE in single quotes, read back unchanged by `source` (sh, bash, zsh) whatever it holds.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

[[ "$dbname" != *$'\n'* ]] || die "CUSTOS_DEV_DATABASE must be a single line"

command -v curl >/dev/null || die "curl is needed to wait for the services (Debian/Ubuntu: apt-get install -y curl)"
for port in "$es_http" "$es_grpc" "$core_http" "$core_grpc" "$es_metrics" "$core_metrics"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use (another 'make run'?); stop it or set CUSTOS_DEV_*_PORT"
  fi
done

# What this run started, stopped again on every exit: Ctrl-C, a failure, a service that died.
pids=()
names=()
started_pg=""
stop_all() {
  local rc=$?
  trap - EXIT
  trap '' TERM
  # A second Ctrl-C does not wait for the services to finish their calls in flight.
  trap '((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true' INT
  if ((${#pids[@]})); then
    say "stopping the services"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local pid
    for pid in "${pids[@]}"; do
      # wait returns early when a signal arrives; the service may still be draining.
      while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
    done
  fi
  if [[ -n "$started_pg" ]]; then
    say "stopping the throwaway PostgreSQL this run started"
    scripts/dev-postgres.sh stop || true
  fi
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 0' INT TERM

say "dev certificates"
scripts/gen-dev-certs.sh >&2

say "PostgreSQL"
pg_was_running=""
if scripts/dev-postgres.sh status; then pg_was_running=1; fi
server="$(scripts/dev-postgres.sh url)"
if [[ -z "$pg_was_running" ]] && scripts/dev-postgres.sh status; then started_pg=1; fi
db_url="$(scripts/dev-postgres.sh createdb "$dbname" "$server")"

say "building"
make --no-print-directory build >&2

# Local secrets, made once and kept in .run/ (mode 0600) so that restarts can decrypt what earlier
# runs encrypted: the platform master key and the admin-plane token.
umask 077
if [[ ! -s "$run_dir/dev-master-keys" ]]; then
  printf 'dev1:%s\n' "$(openssl rand -base64 32)" >"$run_dir/dev-master-keys"
fi
if [[ ! -s "$run_dir/dev-admin-token" ]]; then
  bin/encryption-service admin-token generate >"$run_dir/dev-admin-token"
fi
if [[ ! -s "$run_dir/dev-core-secret-keys" ]]; then
  printf 'dev1:%s\n' "$(openssl rand -base64 32)" >"$run_dir/dev-core-secret-keys"
fi
if [[ ! -s "$run_dir/dev-platform-admin" ]]; then
  printf 'admin\n%s\n' "$(openssl rand -base64 18 | tr '+/' '-_')" >"$run_dir/dev-platform-admin"
fi
platform_admin="$(sed -n 1p "$run_dir/dev-platform-admin")"
platform_password="$(sed -n 2p "$run_dir/dev-platform-admin")"
admin_token="$(sed -n 's/^X-Admin-Token: *//p' "$run_dir/dev-admin-token")"
admin_token_hash="$(sed -n 's/^ES_ADMIN_TOKEN_HASH=//p' "$run_dir/dev-admin-token")"
umask 022

# The database must hold data of these keys (or none yet). Another checkout's is refused unless
# CUSTOS_DEV_RESET=1; an empty one is marked as ours now; one with data from before databases
# were marked is marked once the services have read it with these keys.
owner="custos dev $(keys_fingerprint)"
mark_db() {
  printf '%s\n' 'comment on database :"name" is :'"'"'owner'"'"';' |
    psql -w -X -q -v ON_ERROR_STOP=1 -v name="$dbname" -v owner="$owner" -d "$db_url" -f - ||
    die "cannot mark database '$dbname' as this checkout's (the role must own it)"
}
comment="$(db_comment "$db_url")" || die "cannot read database '$dbname'"
unmarked_data=""
if [[ -z "$comment" ]]; then
  unmarked_data="$(printf '%s\n' "select 1 from pg_namespace where nspname in ('core', 'encryption') limit 1;" |
    psql -w -X -q -At -v ON_ERROR_STOP=1 -d "$db_url" -f -)" || die "cannot read database '$dbname'"
fi
if [[ -n "$comment" && "$comment" != "$owner" && "${CUSTOS_DEV_RESET:-}" != 1 ]]; then
  die "database '$dbname' holds data encrypted under other keys than those in .run/ (another checkout's, or .run/ was deleted), which these cannot read. Run 'CUSTOS_DEV_RESET=1 make run' to drop and recreate it, or choose another database with CUSTOS_DEV_DATABASE=name."
fi
if [[ ( -n "$comment" && "$comment" != "$owner" ) || -n "$unmarked_data" ]] && [[ "${CUSTOS_DEV_RESET:-}" == 1 ]]; then
  say "CUSTOS_DEV_RESET=1: recreating database '$dbname'"
  scripts/dev-postgres.sh dropdb "$dbname" "$server" >&2
  db_url="$(scripts/dev-postgres.sh createdb "$dbname" "$server")"
  unmarked_data=""
fi
if [[ -n "$unmarked_data" ]]; then
  say "database '$dbname' holds data from before it was marked with its keys; if a service cannot read it, run 'CUSTOS_DEV_RESET=1 make run'"
else
  mark_db
fi
# For `make clean`: which database, on which server (it drops it only while it is marked as ours).
umask 077
printf '%s\n' "$server" "$dbname" "$db_url" >"$db_record"
umask 022

# The services run in process groups of their own (job control is on while they start): Ctrl-C in
# the terminal then reaches this script alone, which stops them in order, instead of killing them
# under the watch loop below, which would report a crash.
start_service() { # NAME COMMAND...: start COMMAND in the background, logging to .run/logs/NAME.log
  local name="$1"
  shift
  set -m
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
  set +m
}

say "starting the encryption service (logs: .run/logs/encryption-service.log)"
start_service encryption-service env \
  ES_GRPC_ADDR="127.0.0.1:$es_grpc" ES_HTTP_ADDR="127.0.0.1:$es_http" ES_METRICS_ADDR="127.0.0.1:$es_metrics" \
  ES_DATABASE_URL="$db_url" \
  ES_MASTER_KEYS_FILE="$run_dir/dev-master-keys" ES_ADMIN_TOKEN_HASH="$admin_token_hash" \
  ES_TLS_CERT_FILE="$certs/encryption-service.crt" ES_TLS_KEY_FILE="$certs/encryption-service.key" \
  ES_TLS_CLIENT_CA_FILE="$certs/ca.crt" \
  bin/encryption-service

say "starting core (logs: .run/logs/core.log)"
start_service core env \
  CORE_GRPC_ADDR="127.0.0.1:$core_grpc" CORE_HTTP_ADDR="127.0.0.1:$core_http" CORE_METRICS_ADDR="127.0.0.1:$core_metrics" \
  CORE_DATABASE_URL="$db_url" \
  CORE_TLS_CERT_FILE="$certs/core.crt" CORE_TLS_KEY_FILE="$certs/core.key" \
  CORE_METRICS_CLIENT_CA_FILE="$certs/ca.crt" \
  CORE_ES_ADDR="localhost:$es_grpc" CORE_ES_CA_FILE="$certs/ca.crt" \
  CORE_ES_CLIENT_CERT_FILE="$certs/core-client.crt" CORE_ES_CLIENT_KEY_FILE="$certs/core-client.key" \
  CORE_ES_ADMIN_TOKEN="$admin_token" CORE_SECRET_KEYS_FILE="$run_dir/dev-core-secret-keys" \
  CORE_ADMIN_USERNAME="$platform_admin" CORE_ADMIN_PASSWORD="$platform_password" \
  bin/core

# wait_ready NAME URL [curl client-certificate args...]
wait_ready() {
  local name="$1" url="$2"
  shift 2
  for _ in $(seq 1 150); do
    if curl -fsS --cacert "$certs/ca.crt" "$@" "$url" >/dev/null 2>&1; then
      return 0
    fi
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || die "$name did not start; see .run/logs/ ($(tail -n 3 "$logs"/*.log | tr '\n' ' '))"
    done
    sleep 0.2
  done
  die "$name is not ready after 30 s; see .run/logs/"
}
client=(--cert "$certs/operator-client.crt" --key "$certs/operator-client.key")
wait_ready "the encryption service" "https://localhost:$es_http/readyz" "${client[@]}"
wait_ready "core" "https://localhost:$core_http/readyz"
[[ -z "$unmarked_data" ]] || mark_db

# A tenant of the encryption service to try its API with, made once per database.
es_tenant_file="$run_dir/dev-es-tenant"
if [[ -s "$es_tenant_file" ]] && ! ES_DATABASE_URL="$db_url" bin/encryption-service tenant list --json |
  grep -q "$(sed -n 's/^CUSTOS_ES_TENANT_ID=//p' "$es_tenant_file")"; then
  rm -f "$es_tenant_file" # the database was reset
fi
if [[ ! -s "$es_tenant_file" ]]; then
  umask 077
  created="$(ES_DATABASE_URL="$db_url" bin/encryption-service tenant create "dev-$(date +%s)" --json)"
  printf 'CUSTOS_ES_TENANT_ID=%s\nCUSTOS_ES_TENANT_SECRET=%s\n' \
    "$(printf '%s' "$created" | sed -E 's/.*"tenantId":"([^"]+)".*/\1/')" \
    "$(printf '%s' "$created" | sed -E 's/.*"secret":"([^"]+)".*/\1/')" >"$es_tenant_file"
  umask 022
fi

# dev.env: NAME='value' lines, quoted so that `source` reads back paths with spaces (or anything).
write_env() { # NAME VALUE...
  echo "# Written by 'make run' ($(date -u +%Y-%m-%dT%H:%M:%SZ)). Local development only."
  while (($#)); do
    printf '%s=%s\n' "$1" "$(q "$2")"
    shift 2
  done
}
umask 077
write_env \
  CUSTOS_CORE_URL "https://localhost:$core_http" \
  CUSTOS_CORE_GRPC "localhost:$core_grpc" \
  CUSTOS_ES_URL "https://localhost:$es_http" \
  CUSTOS_ES_GRPC "localhost:$es_grpc" \
  CUSTOS_CORE_METRICS_URL "https://localhost:$core_metrics/metrics" \
  CUSTOS_ES_METRICS_URL "https://localhost:$es_metrics/metrics" \
  CUSTOS_CA_FILE "$certs/ca.crt" \
  CUSTOS_CLIENT_CERT_FILE "$certs/operator-client.crt" \
  CUSTOS_CLIENT_KEY_FILE "$certs/operator-client.key" \
  CUSTOS_ES_ADMIN_TOKEN "$admin_token" \
  CUSTOS_ADMIN_USERNAME "$platform_admin" \
  CUSTOS_ADMIN_PASSWORD "$platform_password" \
  CUSTOS_ES_TENANT_ID "$(sed -n 's/^CUSTOS_ES_TENANT_ID=//p' "$es_tenant_file")" \
  CUSTOS_ES_TENANT_SECRET "$(sed -n 's/^CUSTOS_ES_TENANT_SECRET=//p' "$es_tenant_file")" \
  CUSTOS_DATABASE_URL "$db_url" >"$run_dir/dev.env"
umask 022

cat >&2 <<MSG

Custos is running.
  core                https://localhost:$core_http (REST)   localhost:$core_grpc (gRPC)
  encryption service  https://localhost:$es_http (REST)   localhost:$es_grpc (gRPC, mutual TLS)
  settings for clients: .run/dev.env     logs: .run/logs/

Try the encryption service (mutual TLS, tenant credential):
  source .run/dev.env
  es() { curl -sS --cacert "\$CUSTOS_CA_FILE" --cert "\$CUSTOS_CLIENT_CERT_FILE" --key "\$CUSTOS_CLIENT_KEY_FILE" \\
         -H "X-Tenant-Id: \$CUSTOS_ES_TENANT_ID" -H "X-Tenant-Secret: \$CUSTOS_ES_TENANT_SECRET" "\$@"; }
  es -X POST "\$CUSTOS_ES_URL/v1/encryptions" -d '{"algorithm":"AES-256-GCM"}'
  es -X POST "\$CUSTOS_ES_URL/v1/encrypt" -d '{"encryptionId":"<id from above>","data":"hello"}'

Try core (log in as the platform admin, create a tenant):
  tok=\$(curl -sS --cacert "\$CUSTOS_CA_FILE" -X POST "\$CUSTOS_CORE_URL/v1/auth/login" \\
        -d "{\\"username\\":\\"\$CUSTOS_ADMIN_USERNAME\\",\\"password\\":\\"\$CUSTOS_ADMIN_PASSWORD\\"}" | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')
  curl -sS --cacert "\$CUSTOS_CA_FILE" -H "Authorization: Bearer \$tok" -X POST "\$CUSTOS_CORE_URL/v1/tenants" -d '{"name":"acme"}'

Try the custos CLI (bin/custos; every command and exit code: docs/cli.md):
  set -a; source .run/dev.env; set +a; export CUSTOS_URL="\$CUSTOS_CORE_URL" PATH="\$PWD/bin:\$PATH"
  CUSTOS_PASSWORD="\$CUSTOS_ADMIN_PASSWORD" custos --profile admin login --platform-admin -u "\$CUSTOS_ADMIN_USERNAME"
  tid=\$(custos --profile admin tenants create "demo-\$RANDOM" --key-mode CLIENT -o json | grep -o '"tenantId": "[^"]*"' | cut -d'"' -f4)
  u="alice-\$RANDOM"; custos --profile admin users create "\$u" --tenant "\$tid" --role owner   # asks for her password
  custos login -u "\$u"                            # the password is derived locally (Argon2id); only the result is sent
  echo "my secret" > note.txt && custos items put --name note --data-file note.txt  # zero-knowledge: asks for the password again; the master key is never stored
  custos items list && custos totp enroll          # the QR code shows in the terminal
  custos export > backup.ndjson && custos keys rotate --wait && custos keys reencrypt --wait

Press Ctrl-C to stop.
MSG

# Stay up until Ctrl-C or until a service dies.
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      die "${names[$i]} exited on its own; see .run/logs/${names[$i]}.log"
    fi
  done
  sleep 1
done
