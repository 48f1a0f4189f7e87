"""Every link of the console leads somewhere: signed in as the admin and as a
tenant, Chromium follows the console's links (two clicks deep from the
overview) and each opens a page, none of it refused by the browser (the
``page`` fixture fails on a Content-Security-Policy violation or a script
error)."""

from __future__ import annotations

import urllib.parse

import pytest

from tierd.testing import ADMIN_TOKEN

from .conftest import api, publish, sign_in, wait_until

#: Browser tests check the console's HTML and scripts, which do not depend on the storage:
#: they run in the SQLite pass only.
pytestmark = pytest.mark.sqlite_only("browser tests check HTML, not storage")

#: Enough for every kind of page, few enough to stay quick.
MOST_PAGES = 60


def crawl(page, daemon) -> dict[str, int]:
    """Follow the console's links from the overview, two levels deep: path -> status."""
    seen: dict[str, int] = {}
    level = ["/ui/"]
    for _ in range(3):
        found: list[str] = []
        for path in level:
            if path in seen or len(seen) >= MOST_PAGES:
                continue
            answer = page.goto(daemon.url + path)
            assert answer is not None
            seen[path] = answer.status
            hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
            for href in hrefs:
                target = urllib.parse.urljoin(path, href)
                # The console's own pages; a file to download is not a page.
                if target.startswith("/ui/") and "/download" not in target and "/static/" not in target:
                    found.append(target.split("#")[0])
        level = list(dict.fromkeys(found))
    return seen


@pytest.mark.parametrize("who", ["admin", "tenant"])
def test_every_link_of_the_console_opens_a_page(page, daemon, receiver, who):
    token = daemon.create_tenant("acme")
    daemon.create_tenant("bolt")
    good = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/ok"}, token=token)
    receiver.status = 500  # every delivery fails until the schedule gives up: rows with Retry
    publish(daemon, token, "invoice.paid", number=1)
    deliveries = f"/v1/webhooks/{good['id']}/deliveries?status=failed"
    wait_until(lambda: api(daemon, "GET", deliveries, token=token)["data"], 15, "a failed delivery")

    sign_in(page, daemon, ADMIN_TOKEN if who == "admin" else token)
    seen = crawl(page, daemon)
    broken = {path: status for path, status in seen.items() if status != 200}
    assert not broken, broken
    # The crawl reached each part: the endpoint's page and its delivery's.
    assert any(p.startswith(f"/ui/webhooks/{good['id']}") for p in seen), sorted(seen)
    assert any(p.startswith("/ui/deliveries/") for p in seen), sorted(seen)
