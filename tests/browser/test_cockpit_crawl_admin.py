"""The cockpit crawl (tests/browser/cockpit_crawl.py) as demo-admin and the pages only a form reaches (a client, an agent, an import preview, an invitation); a file per demo user so the
crawls run on different xdist workers."""

from __future__ import annotations

import pytest

from tests.browser.cockpit_crawl import crawl_as

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_every_page_as_demo_admin_fits_390px_and_has_no_axe_violations(portal_server, browser):
    crawl_as(portal_server, browser, "demo-admin")
