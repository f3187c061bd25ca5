#!/bin/sh
# One entrypoint for every portal container (docs/deploy.md).
#   migrate — as the owner role (DATABASE_OWNER_URL): apply migrations, then give the app role
#             (DATABASE_URL's user) its grants: INSERT/SELECT only on audit rows. Idempotent.
#   web | worker | beat — as the app role; they never see the owner's credentials.
set -eu
case "${1:-web}" in
  migrate)
    : "${DATABASE_OWNER_URL:?migrate runs as the owner role: set DATABASE_OWNER_URL}"
    python manage.py migrate --database owner --no-input
    python manage.py audit_grants --create-role
    ;;
  web)
    # open bundle streams would hold a stop for their whole lifetime (up to 5 min): cut them after 10 s
    exec uvicorn config.asgi:application --host 0.0.0.0 --port 8000 --workers 2 --proxy-headers \
      --timeout-graceful-shutdown 10
    ;;
  worker)
    exec celery -A config worker --loglevel INFO --concurrency 2
    ;;
  beat)
    exec celery -A config beat --loglevel INFO --schedule /tmp/celerybeat-schedule
    ;;
  *)
    exec "$@"
    ;;
esac
