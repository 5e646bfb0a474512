#!/bin/sh
# Container entrypoint (see the Dockerfile): find the database, then run the command given.
#
# `fly postgres attach` sets the secret DATABASE_URL; fastapi_objects reads OBJECTS_DATABASE_URL,
# so DATABASE_URL is passed on unless OBJECTS_DATABASE_URL is set. Fly writes it as
# postgres://user:pass@<db>.flycast:5432/<name>?sslmode=disable, which the library accepts.
set -e
if [ -z "${OBJECTS_DATABASE_URL:-}" ] && [ -n "${DATABASE_URL:-}" ]; then
  OBJECTS_DATABASE_URL="$DATABASE_URL"
  export OBJECTS_DATABASE_URL
fi
if [ -z "${OBJECTS_DATABASE_URL:-}" ]; then
  echo "entrypoint: no DATABASE_URL or OBJECTS_DATABASE_URL: using SQLite inside the" \
    "container, which the next deploy wipes (attach a database: fly postgres attach)" >&2
fi
exec "$@"
