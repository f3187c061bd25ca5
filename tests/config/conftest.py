"""The audit helpers' fixtures (an enforcement client and its gateway API client) for the home's tests."""

from tests.audit.conftest import environment, gateway, issued  # noqa: F401 - fixtures used by tests/config
