"""The REST API under /api/v1/ for policy objects, bundles and enforcement clients."""
