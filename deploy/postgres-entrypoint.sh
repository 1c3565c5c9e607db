#!/bin/bash
# Entrypoint of the locally built PostgreSQL image (scripts/container-engine builds it from
# Debian's postgresql-15 where no image registry answers). It keeps the contract of the
# official postgres image's entrypoint, because docker-compose.yml and testcontainers'
# postgres module rely on it:
#   - POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#     POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user), POSTGRES_INITDB_ARGS;
#   - an empty PGDATA is initialised by a temporary socket-only server, which also runs
#     /docker-entrypoint-initdb.d/*.sql, *.sql.gz and *.sh, then stops;
#   - both the temporary and the final server log "database system is ready to accept
#     connections", which testcontainers counts (twice) before it hands the container out;
#   - arguments starting with "-" go to postgres; any other command runs as given.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "${1:-}" != postgres ]; then
	exec "$@"
fi

# PostgreSQL refuses to run as root: own the directories, then come back as postgres.
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	chown postgres:postgres /var/run/postgresql
	chmod 0700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi
export HOME=/var/lib/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo >&2 'error: database is uninitialized and POSTGRES_PASSWORD is not set'
		echo >&2 '       (set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections)'
		exit 1
	fi
	user="${POSTGRES_USER:-postgres}"
	db="${POSTGRES_DB:-$user}"

	# The password travels through a pipe, never argv, where ps would show it.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words by contract.
	initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
		${POSTGRES_INITDB_ARGS:-}
	printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# Socket only, so nothing can connect over TCP before initialisation is complete.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start

	psql_init=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$user")
	if [ "$db" != postgres ]; then
		"${psql_init[@]}" --dbname postgres --set db="$db" <<-'SQL'
			CREATE DATABASE :"db";
		SQL
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			echo "running $f"
			# shellcheck disable=SC1090 # the scripts are the user's, known only at run time.
			. "$f"
			;;
		*.sql) echo "running $f"; "${psql_init[@]}" --dbname "$db" -f "$f" ;;
		*.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql_init[@]}" --dbname "$db" ;;
		*) if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
		esac
	done

	pg_ctl -D "$PGDATA" -m fast -w stop
	echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
