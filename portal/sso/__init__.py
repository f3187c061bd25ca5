"""Single sign-on for people: OpenID Connect login (mozilla-django-oidc), just-in-time accounts,
and team roles that follow the identity provider's groups at each login (docs/operations.md)."""
