#!/usr/bin/env bash
# Install (if missing) and start a local PostgreSQL, create role lq6 and database lq6test (idempotent),
# and print the line that exports LQ6_TEST_PG for the lq6-store test suite. Safe to run repeatedly.
#   eval "$(bash .ci/postgres.sh)"
# Everything except the export line goes to stderr.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "postgres.sh: installing postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
VER=$(ls /usr/lib/postgresql | sort -V | tail -n1)

if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VER main"; then
    pg_createcluster "$VER" main >&2
fi
STATUS=$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}')
if [ "$STATUS" != "online" ]; then
    pg_ctlcluster "$VER" main start >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$PORT" >&2

psql_pg() { runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_pg -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lq6') THEN
    CREATE ROLE lq6 LOGIN PASSWORD 'lq6';
  END IF;
END \$\$;" >&2
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'lq6test'")" != "1" ]; then
    runuser -u postgres -- createdb -p "$PORT" -O lq6 lq6test >&2
fi
echo "export LQ6_TEST_PG='host=127.0.0.1 port=$PORT user=lq6 password=lq6 dbname=lq6test'"
