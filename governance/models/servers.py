"""The MCP server catalogue and each server's tools."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator, URLValidator
from django.db import models

from governance.choices import (
    AccessClass,
    ServerCategory,
    ToolReportSource,
    ToolReportStatus,
    Transport,
    UnknownToolPolicy,
)
from portal.permissions import team_scoped_manager

# Server slugs name servers in the bundle, YAML and tool names (`server__tool`).
SERVER_SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*$", "Use lowercase letters, digits, '_' and '-' (like github_api)."
)


# What the server may ask of the agent's side (MCP server-to-client requests): the bundle's
# `server_requests` (mcpgov.bundle.ServerRequestPolicy), one field each.
SERVER_REQUEST_FIELDS = (
    "sampling_allowed",
    "sampling_max_tokens",
    "sampling_tools_allowed",
    "elicitation_allowed",
    "elicitation_url_domains",
    "roots_allowed",
)
DOMAIN_VALIDATOR = RegexValidator(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
    "Enter a domain such as example.com.",
)


class McpServer(models.Model):
    # What an admin edits (the service, the form and the API serializer all use this list).
    FIELDS = (
        "slug",
        "name",
        "description",
        "category",
        "transport",
        "command",
        "args",
        "url",
        "known_risks",
        "past_incidents",
        "adr_links",
        "cost_per_call",
        "allow_unknown_tools",
        *SERVER_REQUEST_FIELDS,
    )

    team = models.ForeignKey("portal.Team", on_delete=models.CASCADE, related_name="servers")
    slug = models.CharField(max_length=100, validators=[SERVER_SLUG_VALIDATOR])
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=32, choices=ServerCategory.choices, default=ServerCategory.OTHER)
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.STDIO)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable to launch.")
    args = models.JSONField(default=list, blank=True, help_text="stdio: the command's arguments (a list).")
    url = models.CharField(max_length=500, blank=True, help_text="Streamable HTTP endpoint URL.")
    known_risks = models.TextField(blank=True)
    past_incidents = models.TextField(blank=True)
    adr_links = models.JSONField(
        default=list, blank=True, help_text="Links to architecture decision records."
    )
    cost_per_call = models.DecimalField(
        max_digits=10, decimal_places=4, default=0, validators=[MinValueValidator(0)]
    )
    allow_unknown_tools = models.CharField(
        max_length=16,
        choices=UnknownToolPolicy.choices,
        default=UnknownToolPolicy.DENY,
        help_text="Tools the upstream lists that the catalogue does not know: refused, or allowed as writes.",
    )
    sampling_allowed = models.BooleanField(
        "Sampling allowed",
        default=False,
        help_text="The server may ask the agent's model to generate text (sampling/createMessage). Off by default.",
    )
    sampling_max_tokens = models.PositiveIntegerField(
        "Sampling token cap",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="A sampling request's maxTokens above this is lowered to it. Empty: no cap.",
    )
    sampling_tools_allowed = models.BooleanField(
        "Tools inside sampling", default=False, help_text="A sampling request may offer the model tools."
    )
    elicitation_allowed = models.BooleanField(
        "Form elicitation allowed", default=True, help_text="The server may ask the user questions in a form."
    )
    elicitation_url_domains = models.JSONField(
        "URL elicitation domains",
        default=list,
        blank=True,
        help_text="The server may send the user to https URLs on these domains (and their subdomains) only.",
    )
    roots_allowed = models.BooleanField(
        "Roots allowed", default=True, help_text="The server may list the agent's roots (roots/list)."
    )
    tools_discovered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = team_scoped_manager("team")

    class Meta:
        ordering = ["slug"]
        verbose_name = "MCP server"
        constraints = [
            models.UniqueConstraint(fields=["team", "slug"], name="server_unique_team_slug"),
            models.CheckConstraint(condition=models.Q(cost_per_call__gte=0), name="server_cost_not_negative"),
        ]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not isinstance(self.args, list) or not all(isinstance(a, str) for a in self.args):
            errors["args"] = "Arguments must be a list of strings."
        if not isinstance(self.adr_links, list) or not all(isinstance(a, str) for a in self.adr_links):
            errors["adr_links"] = "ADR links must be a list of URLs."
        domains = self.elicitation_url_domains
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            errors["elicitation_url_domains"] = "URL elicitation domains must be a list of domains."
        else:
            for domain in domains:
                try:
                    DOMAIN_VALIDATOR(domain)
                except ValidationError:
                    errors["elicitation_url_domains"] = (
                        f"{domain[:100]!r} is not a domain such as example.com."
                    )
                    break
        if self.transport == Transport.HTTP and self.command:
            errors["command"] = "An HTTP server has a URL, not a command."
        if self.transport == Transport.STDIO and self.url:
            errors["url"] = "A stdio server has a command, not a URL."
        if self.url:
            try:
                URLValidator(schemes=["http", "https"])(self.url)
            except ValidationError:
                errors["url"] = "Enter an http:// or https:// URL."
        if errors:
            raise ValidationError(errors)

    @property
    def is_connectable(self) -> bool:
        return bool(self.command if self.transport == Transport.STDIO else self.url)


class McpTool(models.Model):
    """A tool a server offers. Its read/write class comes from the MCP annotations unless overridden."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=200)
    title = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(
        default=dict, blank=True, help_text="The tool's MCP annotations as discovered."
    )
    read_only_hint = models.BooleanField(null=True, blank=True)
    destructive_hint = models.BooleanField(null=True, blank=True)
    access_class_override = models.CharField(
        max_length=8,
        choices=AccessClass.choices,
        blank=True,
        help_text="Overrides the class derived from the annotations (hints are untrusted).",
    )
    approval_required = models.BooleanField(
        default=False, help_text="Each call waits for a person's approval."
    )
    discovered_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("server__team")

    class Meta:
        ordering = ["server__slug", "name"]
        verbose_name = "MCP tool"
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="tool_unique_server_name")]

    def __str__(self) -> str:
        return f"{self.server.slug}.{self.name}"

    @property
    def derived_class(self) -> str:
        # The MCP spec's conservative defaults: no readOnlyHint means "may write".
        return AccessClass.READ if self.read_only_hint is True else AccessClass.WRITE

    @property
    def access_class(self) -> str:
        return self.access_class_override or self.derived_class


class ToolReport(models.Model):
    """Tool definitions an enforcement client saw on one of its team's servers (`mcpgov discover`, or
    a gateway at session start), waiting for an admin. A report is never policy by itself: approving
    it records the tools as discovery does (governance/services/tool_reports.py)."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tool_reports")
    client = models.ForeignKey(
        "governance.EnforcementClient", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_name = models.CharField(max_length=200, help_text="The reporting client, kept if it is deleted.")
    environment_name = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=16, choices=ToolReportSource.choices)
    status = models.CharField(
        max_length=16, choices=ToolReportStatus.choices, default=ToolReportStatus.PENDING, db_index=True
    )
    tools = models.JSONField(
        default=list, help_text="Tool specs: name, title, description, input_schema, annotations."
    )
    content_hash = models.CharField(max_length=64)
    times_reported = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_reported_at = models.DateTimeField()
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    objects = team_scoped_manager("server__team")

    class Meta:
        ordering = ["-last_reported_at", "-pk"]
        verbose_name = "tool report"
        constraints = [
            models.UniqueConstraint(
                fields=["server", "content_hash"],
                condition=models.Q(status="pending"),
                name="toolreport_one_pending_per_content",
            )
        ]

    def __str__(self) -> str:
        return f"{self.server.slug}: {len(self.tools)} tools from {self.client_name}"
