#!/bin/sh
# compose-init.sh - the "init" service of deploy/compose.yaml (busybox, as root, no network).
#
# Copies the dev certificates from /certs (certs/dev, read-only) into the services' volumes, owned by
# the user each service runs as and readable by it alone, and generates once what must persist with
# the database: the PostgreSQL password, the platform master key, core's secret keys and its admin's
# first password. Prints no secret.
set -eu
# Every file made here is private until put() hands it over: certificates' keys and the secrets
# below are never readable by others, not even between being written and being chmod-ed.
umask 077

# The COMPOSE_INIT_* variables exist for encryption-service/deploytest, which runs this script
# against temporary directories as an ordinary user; compose sets none of them.
certs="${COMPOSE_INIT_CERTS:-/certs}"
out="${COMPOSE_INIT_OUT:-/out}"
es="$out/encryption-service"
core="$out/core"
pg="$out/postgres"
service_user="${COMPOSE_INIT_SERVICE_USER:-65532:65532}"   # distroless "nonroot", the services' images
postgres_user="${COMPOSE_INIT_POSTGRES_USER:-999:999}"     # the postgres image's user

for f in ca.crt encryption-service.crt encryption-service.key core.crt core.key core-client.crt core-client.key; do
  if [ ! -s "$certs/$f" ]; then
    echo "compose init: certs/dev/$f is missing: run scripts/gen-dev-certs.sh first" >&2
    exit 1
  fi
done

# put SRC DEST OWNER: a copy of SRC at DEST, mode 0400, owned by OWNER, replaced atomically.
put() {
  cp "$1" "$2.tmp"
  chmod 0400 "$2.tmp"
  chown "$3" "$2.tmp"
  mv -f "$2.tmp" "$2"
}

# random N: N random bytes, base64.
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }

mkdir -p "$es/tls" "$es/master-keys" "$core/tls" "$pg"
# Files an interrupted run left behind: an earlier version of this script could leave
# secret-keys.new readable by everyone, and ">" would keep that mode when writing into it.
rm -f "$es"/*.new "$es"/*.tmp "$es"/tls/*.tmp "$es"/master-keys/*.tmp "$core"/*.new "$core"/*.tmp \
  "$core"/tls/*.tmp "$pg"/*.new "$pg"/*.tmp
chmod 0755 "$es" "$es/tls" "$es/master-keys" "$core" "$core/tls" "$pg"

# Certificates: copied at every start, so that regenerated dev certificates reach the services,
# which reload them without a restart.
for f in ca.crt encryption-service.crt encryption-service.key core-client.crt core-client.key; do
  put "$certs/$f" "$es/tls/$f" "$service_user"
done
for f in ca.crt core.crt core.key core-client.crt core-client.key; do
  put "$certs/$f" "$core/tls/$f" "$service_user"
done

# The PostgreSQL password: made once (the database keeps the one it was initialised with).
if [ ! -s "$pg/password" ]; then
  random 24 | tr '+/' '-_' | tr -d '=' >"$pg/password.new"
  put "$pg/password.new" "$pg/password" "$postgres_user"
  rm -f "$pg/password.new"
fi
url="postgres://custos:$(cat "$pg/password")@postgres:5432/custos?sslmode=disable"
printf '%s\n' "$url" >"$es/database-url.new"
put "$es/database-url.new" "$es/database-url" "$service_user"
cp "$es/database-url.new" "$core/database-url.new"
put "$core/database-url.new" "$core/database-url" "$service_user"
rm -f "$es/database-url.new" "$core/database-url.new"

# The platform master key: made once, kept with the database it encrypts (ES_MASTER_KEY_DIR: one
# file per key, named by its id).
if [ -z "$(ls -A "$es/master-keys")" ]; then
  random 32 >"$es/master-keys.new"
  put "$es/master-keys.new" "$es/master-keys/compose1" "$service_user"
  rm -f "$es/master-keys.new"
fi

# Core's secret keys (CORE_SECRET_KEYS_FILE: "id:base64") and its platform admin's first password.
if [ ! -s "$core/secret-keys" ]; then
  printf 'compose1:%s\n' "$(random 32)" >"$core/secret-keys.new"
  put "$core/secret-keys.new" "$core/secret-keys" "$service_user"
  rm -f "$core/secret-keys.new"
fi
if [ ! -s "$core/admin-password" ]; then
  random 18 | tr '+/' '-_' >"$core/admin-password.new"
  put "$core/admin-password.new" "$core/admin-password" "$service_user"
  rm -f "$core/admin-password.new"
fi

echo "compose init: certificates copied; database password, master key, secret keys and admin password in place"
