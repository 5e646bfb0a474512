# The fastapi_objects example app, for Fly.io (see fly.toml and docs/deploy-fly.md) or any
# container host: fastapi_objects with its PostgreSQL driver, plus the app and its migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The library first, so that editing the app does not reinstall it.
COPY pyproject.toml README.md ./
COPY fastapi_objects ./fastapi_objects
COPY templates ./templates
RUN pip install ".[postgres]"
COPY example_app ./example_app

RUN useradd --create-home --uid 1000 app && chown app /app
USER app

# 8080: the app, behind Fly's proxy. The node's internal listener (OBJECTS_INTERNAL_PORT in
# fly.toml, 8081) is reached over the private network only: it is not a published port.
EXPOSE 8080
# Warns when no database is attached (fastapi_objects reads Fly's DATABASE_URL itself); wraps
# the CMD and fly.toml's release_command (the migration) alike.
ENTRYPOINT ["sh", "example_app/entrypoint.sh"]
# One process per machine, one node: the internal port is fixed (fly.toml), so scale out with
# machines (`fly scale count`), not workers.
# The graceful-shutdown bound leaves the node time, within fly.toml's kill_timeout, to
# hibernate, release its objects and deregister. Fly's proxy sets X-Forwarded-Proto.
CMD ["uvicorn", "example_app.main:app", "--host", "0.0.0.0", "--port", "8080", "--forwarded-allow-ips", "*", "--timeout-graceful-shutdown", "20"]
