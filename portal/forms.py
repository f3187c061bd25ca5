"""Forms of the web shell: members and invitations, accepting an invitation, and the site admin's teams."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from portal.choices import TeamRole
from portal.models import SLUG_VALIDATOR, Membership
from portal.services import is_last_admin


class InvitationForm(forms.Form):
    """Invite a person by email. Whether an account has that email is never shown."""

    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=TeamRole.choices, initial=TeamRole.VIEWER)
    is_auditor = forms.BooleanField(required=False, label="Auditor (sees audit payloads)")


class MemberForm(forms.Form):
    """Change a member's team role or auditor flag. A team always keeps at least one admin."""

    role = forms.ChoiceField(choices=TeamRole.choices)
    is_auditor = forms.BooleanField(required=False, label="Auditor")

    def __init__(self, *args, membership: Membership, **kwargs):
        kwargs.setdefault("initial", {"role": membership.role, "is_auditor": membership.is_auditor})
        kwargs.setdefault("auto_id", f"id_member{membership.pk}_%s")
        super().__init__(*args, **kwargs)
        self.membership = membership

    def clean_role(self):
        role = self.cleaned_data["role"]
        if role != TeamRole.ADMIN and is_last_admin(self.membership):
            raise ValidationError("The team's last admin cannot be demoted; make someone else admin first.")
        return role


class InvitationSignupForm(forms.Form):
    """Create an account from an invitation; its email is the invitation's."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(widget=forms.PasswordInput, strip=False, label="Password (again)")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password") and cleaned.get("password") != cleaned.get("password_again"):
            raise ValidationError({"password_again": "The two passwords differ."})
        return cleaned


class TeamCreateForm(forms.Form):
    slug = forms.CharField(max_length=64, validators=[SLUG_VALIDATOR])
    name = forms.CharField(max_length=200)
    admin = forms.CharField(
        max_length=254,
        label="First admin",
        help_text="A username or email. An email without an account gets an admin invitation.",
    )
