#!/bin/sh
# Container entrypoint (see the Dockerfile): say when no database is attached, then run the
# command given (the server, or fly.toml's release command).
#
# fastapi_objects reads OBJECTS_DATABASE_URL, else DATABASE_URL, which `fly postgres attach`
# sets as postgres://user:pass@<db>.flycast:5432/<name>?sslmode=disable (accepted as it is).
set -e
if [ -z "${OBJECTS_DATABASE_URL:-}${DATABASE_URL:-}" ]; then
  echo "entrypoint: no DATABASE_URL or OBJECTS_DATABASE_URL: using SQLite inside the" \
    "container, which the next deploy wipes (attach a database: fly postgres attach)" >&2
fi
exec "$@"
