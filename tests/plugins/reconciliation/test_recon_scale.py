"""Pages of reconciliation's lists cost the same at any size (issue 16): every
paged list (imports, matches and suggestions of an account and of a run,
the audit, the open items) with each of its filters, through the API and to
the last page; each statement the page ran on the database is read along an
index in its sort order, never sorted in a temporary B-tree, never a scan.
The plans are SQLite's: on PostgreSQL (``TIERD_TEST_STORAGE=postgresql``) the
pages are walked and checked all the same, their plans not (it plans from its
statistics, with no EXPLAIN pinned here)."""

from __future__ import annotations

import contextlib
import json

from test_recon_e2e import CONFIG, FIXTURES, LEDGER

from tierd.testing import ADMIN_TOKEN, LocalDaemon, assert_index_walk, recorded_reads

BASE = "/v1/reconciliation/accounts/main-eur"


def walks_index(plan: list[str]) -> None:
    """Besides what assert_index_walk checks, no full pass over an index either
    ("SCAN t USING INDEX i" reads every entry of i)."""
    assert not [line for line in plan if line.startswith("SCAN ") and line != "SCAN CONSTANT ROW"], plan


def reads_of(db):
    """The statements run on ``db``'s readers inside the block, on SQLite (whose plans are checked)."""
    return recorded_reads(db) if db.dialect == "sqlite" else contextlib.nullcontext([])


async def upload(d: LocalDaemon, path: str, data: bytes, content_type: str) -> dict:
    assert d.session is not None
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Tierd-Tenant": "acme", "Content-Type": content_type}
    async with d.session.post(d.url + path, data=data, headers=headers) as resp:
        body = await resp.json()
        assert resp.status in (200, 201), body
        return body


async def test_every_paged_list_walks_an_index_in_its_order(tmp_path):
    config = json.loads(json.dumps(CONFIG)) | {"plugins": {"disabled": ["webhooks", "notifications"]}}
    async with LocalDaemon(tmp_path, config) as d:
        assert d.daemon is not None
        await d.tenant("acme")

        async def call(method: str, path: str, body=None, params=None):
            status, answer = await d.call(method, BASE + path, body, tenant="acme", params=params)
            assert status in (200, 201), (path, answer)
            return answer

        # Two imports, the ledger, a run; a suggestion accepted (its rival goes
        # stale), a match undone and made again by hand: every status there is.
        octets = "application/octet-stream"
        await upload(d, BASE + "/statements", (FIXTURES / "camt053_v2_batch.xml").read_bytes(), octets)
        await upload(d, BASE + "/statements", (FIXTURES / "csv_cp1252_debit_credit.csv").read_bytes(), octets)
        await call("POST", "/ledger", {"entries": LEDGER})
        run = await call("POST", "/runs")
        suggestions = (await call("GET", f"/runs/{run['id']}/suggestions"))["data"]
        await call("POST", f"/suggestions/{suggestions[0]['id']}/accept")
        match = (await call("GET", f"/runs/{run['id']}/matches"))["data"][0]
        await call("DELETE", f"/matches/{match['id']}")
        await call(
            "POST",
            "/matches",
            {
                "statement_line_ids": [ln["id"] for ln in match["statement_lines"]],
                "ledger_entry_ids": [e["id"] for e in match["ledger_entries"]],
            },
        )
        db = d.daemon.db

        runs = f"/runs/{run['id']}"
        # (path, query parameters, what each item returned must have, how many there are)
        cases: list[tuple[str, dict, dict, int | None]] = [
            ("/imports", {}, {}, 2),
            ("/imports", {"limit": "1"}, {}, 2),
            ("/matches", {}, {"status": "active"}, 6),
            ("/matches", {"status": "active", "limit": "2"}, {"status": "active"}, 6),
            ("/matches", {"status": "undone"}, {"status": "undone"}, 1),
            ("/suggestions", {}, {"status": "open"}, None),
            ("/suggestions", {"status": "accepted"}, {"status": "accepted"}, 1),
            ("/suggestions", {"status": "stale"}, {"status": "stale"}, None),
            ("/suggestions", {"status": "all", "limit": "1"}, {}, len(suggestions)),
            (runs + "/matches", {}, {}, 6),
            (runs + "/matches", {"status": "active", "limit": "2"}, {"status": "active"}, 5),
            (runs + "/matches", {"status": "undone"}, {"status": "undone"}, 1),
            (runs + "/suggestions", {}, {"status": "open"}, None),
            (runs + "/suggestions", {"status": "accepted"}, {"status": "accepted"}, 1),
            (runs + "/suggestions", {"status": "stale"}, {"status": "stale"}, None),
            (runs + "/suggestions", {"status": "all", "limit": "1"}, {}, len(suggestions)),
            ("/audit", {}, {}, None),
            ("/audit", {"limit": "2"}, {}, None),
        ]
        for path, params, want, count in cases:
            items: list[dict] = []
            pages, cursor = 0, None
            async with reads_of(db) as reads:
                while True:  # every page: the first ones and the last
                    page = await call("GET", path, params=params | ({"cursor": cursor} if cursor else {}))
                    items += page["data"]
                    pages += 1
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
            label = f"{path} {params}"
            for item in items:
                assert {k: item[k] for k in want} == want, (label, item)
            assert len({i["id"] for i in items}) == len(items), label
            if count is not None:
                assert len(items) == count, (label, items)
            if "limit" in params:
                assert pages > 1, label
            ours = [sql for sql in reads if "recon_" in sql]
            assert any("ORDER BY id LIMIT" in sql for sql in ours) or db.dialect != "sqlite", (label, reads)
            for sql in ours:
                walks_index(assert_index_walk(db.path, sql))

        # The open items: a page of each side, oldest first, and how many there are.
        everything = await call("GET", "/open-items")
        for params in ({}, {"side": "bank"}, {"side": "ledger", "limit": "1"}, {"min_age_days": "30"}):
            async with reads_of(db) as reads:
                page = await call("GET", "/open-items", params=params)
            for key, date in (("statement_lines", "booking_date"), ("ledger_entries", "date")):
                if key not in page:
                    continue
                rows = page[key]
                assert [r[date] for r in rows] == sorted(r[date] for r in rows), params
                assert all(r["age_days"] >= int(params.get("min_age_days", 0)) for r in rows), params
                assert len(rows) <= int(params.get("limit", 1000))
                if "min_age_days" not in params:
                    assert page[key + "_total"] == everything[key + "_total"]
                    assert rows == everything[key][: len(rows)]
            ours = [sql for sql in reads if "recon_" in sql]
            assert any("match_id IS NULL" in sql for sql in ours) or db.dialect != "sqlite", (params, reads)
            for sql in ours:
                walks_index(assert_index_walk(db.path, sql))
        assert everything["ledger_entries_total"] >= 1 and everything["statement_lines_total"] >= 1
        old = await call("GET", "/open-items", params={"min_age_days": "30"})
        assert [e["external_id"] for e in old["ledger_entries"]] == ["L-6"] and old["ledger_entries_total"] == 1
