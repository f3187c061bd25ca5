"""The permission matrix every page is tried with (docs: STYLE.md, "Tests"): an anonymous user, a person
signed in without a team, each team role without the permission, another team's admin and a permitted
admin; every refusal checks that nothing changed.

A test module lists its `Case`s and subclasses `PageMatrix` (NetBox's shared view test cases): it names
its objects fixture (`objects`) and its `db_state()`, and pytest collects the shared tests from the
subclass, each parametrized over the cases it applies to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from django.urls import reverse

from portal.choices import TeamRole
from tests.factories import UserFactory, make_member


@dataclass
class Case:
    id: str
    url_name: str
    kwargs: Callable[[SimpleNamespace], dict] = lambda p: {}
    method: str = "get"
    data: Callable[[SimpleNamespace], dict] = lambda p: {}
    object_page: bool = False  # names one of the team's objects: another team gets 404
    perm: str = "view_team"
    draft: bool = False  # the team edits through drafts and has an open draft (another admin's change)

    def url(self, p: SimpleNamespace) -> str:
        return reverse(self.url_name, kwargs=self.kwargs(p))


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def call(client, case: Case, p: SimpleNamespace, **extra):
    url = case.url(p)
    return client.post(url, case.data(p), **extra) if case.method == "post" else client.get(url, **extra)


POST_FORM = re.compile(r"<form\b[^>]*\bmethod=\"post\"[^>]*>", re.I)
ACTION = re.compile(r"\baction=\"([^\"]*)\"")


def edit_controls(html: str) -> list[str]:
    """The page's write controls: POST forms other than the shell's (team switcher, log out), htmx posts,
    and links to create/edit/delete pages."""
    shell = {reverse("team-switch"), reverse("logout")}
    found = []
    for form in POST_FORM.findall(html):
        action = ACTION.search(form)
        if not action or action.group(1) not in shell:
            found.append(form)
    found += re.findall(r"hx-(?:post|put|delete)=\"[^\"]*\"", html)
    found += re.findall(r"href=\"[^\"]*/(?:add|edit|delete)/\"", html)
    return found


READERS = (TeamRole.VIEWER, TeamRole.REVIEWER, TeamRole.REQUESTER)


def _over(select: Callable[[type[PageMatrix]], list[Case]], roles: str | None = None):
    """Which of the subclass's cases (and which of its role lists) a shared test runs over."""

    def mark(fn):
        fn.matrix_cases, fn.matrix_roles = select, roles
        return fn

    return mark


class PageMatrix:
    """The shared cases. Subclasses set the lists below, an `objects` fixture and `db_state()`."""

    pages: ClassVar[list[Case]] = []  # every member reads them
    guarded_pages: ClassVar[list[Case]] = []  # GET pages that need `perm` and show no form
    form_pages: ClassVar[list[Case]] = []  # GET pages of a form that needs `perm`
    writes: ClassVar[list[Case]] = []  # POSTs that need `perm`
    reader_roles: ClassVar[tuple[str, ...]] = READERS
    refused_roles: ClassVar[tuple[str, ...]] = READERS  # roles holding none of the cases' permissions
    no_team_status: ClassVar[dict[str, int]] = {}  # case id → status for someone with no team (else 404)
    pages_without_edit_controls: ClassVar[tuple[str, ...]] = ()  # read-only even for the admin
    read_page_shows: ClassVar[tuple[str, ...]] = ()  # names every reader sees on every page
    our_names: ClassVar[tuple[str, ...]] = ()  # the team's names: never on another team's list pages
    silent_writes: ClassVar[tuple[str, ...]] = ()  # writes answered with a page, not a success message

    @pytest.fixture
    def objects(self) -> SimpleNamespace:
        raise NotImplementedError("a PageMatrix subclass provides its `objects` fixture")

    def db_state(self) -> dict[str, Any]:
        raise NotImplementedError("a PageMatrix subclass says what a refused request must not change")

    @classmethod
    def all_cases(cls) -> list[Case]:
        return cls.pages + cls.guarded_pages + cls.form_pages + cls.writes

    @classmethod
    def refused_cases(cls) -> list[Case]:
        return cls.guarded_pages + cls.form_pages + cls.writes

    def pytest_generate_tests(self, metafunc):
        select = getattr(metafunc.function, "matrix_cases", None)
        if select is None:
            return
        cases = select(type(self))
        metafunc.parametrize("case", cases, ids=ids(cases))
        if metafunc.function.matrix_roles:
            metafunc.parametrize("role", getattr(self, metafunc.function.matrix_roles))

    @_over(lambda cls: cls.all_cases())
    def test_anonymous_user_is_sent_to_login_and_nothing_changes(self, client, objects, case):
        before = self.db_state()
        response = call(client, case, objects)
        assert response.status_code == 302 and response.url.startswith(reverse("login") + "?next=")
        assert self.db_state() == before

    @_over(lambda cls: cls.all_cases())
    def test_signed_in_user_without_a_team_gets_404_and_nothing_changes(self, client, objects, case):
        client.force_login(UserFactory(username="no-team-user"))
        before = self.db_state()
        response = call(client, case, objects)
        assert response.status_code == self.no_team_status.get(case.id, 404)
        assert "You are not a member of any team yet" in response.content.decode()
        assert self.db_state() == before

    @_over(lambda cls: cls.pages, roles="reader_roles")
    def test_member_without_permission_reads_pages_without_edit_controls(
        self, client, objects, team, case, role
    ):
        client.force_login(make_member(team, role, username=f"reader-{role}"))
        response = call(client, case, objects)
        html = response.content.decode()
        assert response.status_code == 200
        assert [name for name in self.read_page_shows if name not in html] == []
        assert edit_controls(html) == []

    @_over(lambda cls: cls.refused_cases(), roles="refused_roles")
    def test_member_without_permission_is_refused_and_nothing_changes(
        self, client, objects, team, case, role
    ):
        client.force_login(make_member(team, role, username=f"refused-{role}"))
        before = self.db_state()
        assert call(client, case, objects).status_code == 403
        assert self.db_state() == before

    @_over(lambda cls: [c for c in cls.all_cases() if c.object_page])
    def test_other_team_gets_404_for_the_teams_objects_and_nothing_changes(
        self, client, objects, outsider, case
    ):
        client.force_login(outsider)
        before = self.db_state()
        assert call(client, case, objects).status_code == 404
        assert self.db_state() == before

    @_over(lambda cls: [c for c in cls.pages if not c.object_page])
    def test_other_teams_pages_never_list_the_teams_objects(self, client, objects, outsider, case):
        client.force_login(outsider)
        html = call(client, case, objects).content.decode()
        assert [name for name in self.our_names if name in html] == []

    @_over(lambda cls: cls.pages)
    def test_admin_sees_edit_controls(self, client, objects, admin, case):
        client.force_login(admin)
        response = call(client, case, objects)
        assert response.status_code == 200
        if case.id not in self.pages_without_edit_controls:
            assert edit_controls(response.content.decode()), "the admin should see something to edit"

    @_over(lambda cls: cls.form_pages)
    def test_admin_opens_form_pages(self, client, objects, admin, case):
        client.force_login(admin)
        response = call(client, case, objects)
        assert response.status_code == 200 and POST_FORM.search(response.content.decode())

    @_over(lambda cls: cls.writes)
    def test_admin_write_changes_it_and_says_so(self, client, objects, admin, case):
        client.force_login(admin)
        before = self.db_state()
        response = call(client, case, objects, follow=True)
        assert response.status_code == 200
        assert self.db_state() != before
        if case.id not in self.silent_writes:
            assert re.search(r'class="msg-success"', response.content.decode()), "a success message is shown"
