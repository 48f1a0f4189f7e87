"""``tierd recon ...``: the reconciliation commands, talking to the running daemon."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click

from tierd.core.cli_helpers import count_of, tenant_command

BASE = "/v1/reconciliation/accounts"
CHUNK = 64 * 1024

account_option = click.option("--account", required=True, help="Account id")


@click.group("recon")
def recon_cli():
    """Bank reconciliation: import statements and ledger, run the matching, review."""


def recon_command(name: str, account: bool = True):
    """A ``recon NAME`` command (core's tenant_command) with --account unless ``account=False``."""
    return tenant_command(recon_cli, name, *([account_option] if account else []))


@recon_command("accounts", account=False)
def accounts(cli, tenant, as_json):
    """List the tenant's accounts."""
    data = cli.api.get(BASE, tenant=tenant)["data"]
    cli.output(data, columns=["id", "name", "currency", "iban", "account_number", "source"], as_json=as_json)


def _upload(cli, path: Path, url: str, tenant: str, params: dict, as_json: bool, content_type: str):
    """Send a file as the request body, in chunks, with a progress bar."""
    size = path.stat().st_size
    with cli.progress(length=size, label=path.name, as_json=as_json) as bar:

        def chunks():
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    bar.update(len(chunk))
                    yield chunk

        return cli.api.request("POST", url, tenant=tenant, params=params, body=chunks(), content_type=content_type)


@recon_command("import")
@click.option("--format", "fmt", default=None, help="camt053, mt940, ofx, csv ... (default: detect)")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(cli, tenant, account, fmt, files, as_json):
    """Import statement files (each in one transaction)."""
    results = []
    for path in files:
        result = _upload(
            cli,
            path,
            f"{BASE}/{account}/statements",
            tenant,
            {"format": fmt, "filename": path.name},
            as_json,
            "application/octet-stream",
        )
        results.append(result)
        if not as_json:
            line = (
                f"{path.name}: {result['format']}, {result['new']} new, {result['duplicates']} duplicate, "
                f"{result['rejected']} rejected"
            )
            for b in result["balances"]:
                if not b["ok"]:
                    line += (
                        f"\n  balance mismatch in statement {b['statement']}: opening {b['opening']} + lines "
                        f"{b['lines_total']} = {b['computed_closing']}, the bank says {b['closing']}"
                    )
            click.echo(line)
    if as_json:
        cli.output(results, as_json=True)


@recon_command("ledger")
@click.option("--layout", default=None, help="ledger_formats entry for a CSV file")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ledger(cli, tenant, account, layout, file, as_json):
    """Upsert ledger entries from a JSON, JSON-lines or CSV file."""
    is_csv = file.suffix.lower() == ".csv"
    result = _upload(
        cli,
        file,
        f"{BASE}/{account}/ledger",
        tenant,
        {"layout": layout, "format": "csv" if is_csv else None},
        as_json,
        "text/csv" if is_csv else "application/json",
    )
    if as_json:
        cli.output(result, as_json=True)
    else:
        click.echo(
            f"{result['new']} new, {result['updated']} updated, {result['unchanged']} unchanged, "
            f"{len(result['conflicts'])} conflicts"
        )
        for c in result["conflicts"]:
            click.echo(f"  {c['external_id']}: {c['reason']}")


@recon_command("run")
def run(cli, tenant, account, as_json):
    """Run the matching rules over the open items."""
    result = cli.api.post(f"{BASE}/{account}/runs", tenant=tenant)
    if as_json:
        cli.output(result, as_json=True)
        return
    c = result["counts"]
    click.echo(
        f"run {result['id']} {result['status']}: {c.get('matches', 0)} matches, {c.get('suggestions', 0)} "
        f"suggestions; open now: {c.get('bank_lines_open', 0)} statement lines, "
        f"{c.get('ledger_entries_open', 0)} ledger entries"
    )
    for rule, n in sorted((c.get("by_rule") or {}).items()):
        click.echo(f"  {rule}: {n}")


@recon_command("open-items")
@click.option("--side", type=click.Choice(["all", "bank", "ledger"]), default="all")
@click.option("--min-age-days", type=int, default=0)
def open_items(cli, tenant, account, side, min_age_days, as_json):
    """Open statement lines and ledger entries, with their age."""
    data = cli.api.get(
        f"{BASE}/{account}/open-items", tenant=tenant, params={"side": side, "min_age_days": min_age_days}
    )
    if as_json:
        cli.output(data, as_json=True)
        return
    if "statement_lines" in data:
        click.echo("Statement lines:")
        cli.output(
            data["statement_lines"],
            columns=[
                "id",
                "booking_date",
                "age_days",
                "amount",
                "currency",
                "counterparty_name",
                "remittance",
                "bank_reference",
            ],
        )
    if "ledger_entries" in data:
        click.echo("Ledger entries:")
        cli.output(
            data["ledger_entries"],
            columns=["id", "external_id", "date", "age_days", "amount", "currency", "counterparty", "reference"],
        )


def _show_match(cli, m: dict, as_json: bool) -> None:
    """A match as JSON, or as one row of its rule, score, items and explanation."""
    cli.output(
        m
        if as_json
        else {
            "id": m["id"],
            "rule": m["rule"],
            "score": m["score"],
            "lines": ",".join(str(x["id"]) for x in m["statement_lines"]),
            "entries": ",".join(x["external_id"] for x in m["ledger_entries"]),
            "adjustment": m["adjustment"],
            "explanation": m["explanation"],
        },
        as_json=as_json,
    )


@recon_command("matches")
@click.option("--run", "run_id", default=None, help="Only the matches of this run")
@click.option("--suggestions", is_flag=True, help="Show the open suggestions instead")
@click.option("--limit", type=int, default=100)
def matches(cli, tenant, account, run_id, suggestions, limit, as_json):
    """Matches (or suggestions) with their rule, score and explanation."""
    kind = "suggestions" if suggestions else "matches"
    path = f"{BASE}/{account}/runs/{run_id}/{kind}" if run_id else f"{BASE}/{account}/{kind}"
    data = cli.api.get(path, tenant=tenant, params={"limit": limit})["data"]
    if as_json:
        cli.output(data, as_json=True)
        return
    if not data:
        click.echo("(none)")
    # Explanations are the point here: each gets a line of its own, unclipped.
    for item in data:
        lines = [x["id"] for x in item["statement_lines"]]
        entries = [x["external_id"] for x in item["ledger_entries"]]
        adjustment = f"  adjustment {item['adjustment']}" if Decimal(item["adjustment"]) else ""
        click.echo(
            f"{item['id']}  {item['rule']}  score {item['score']}  statement lines "
            f"{', '.join(map(str, lines))} <-> ledger {', '.join(map(str, entries))}{adjustment}"
        )
        click.echo(f"    {item['explanation']}")


@recon_command("match")
@click.option("--line", "lines", multiple=True, type=int, help="Statement line id (repeat)")
@click.option("--entry", "entries", multiple=True, type=int, help="Ledger entry id (repeat)")
@click.option("--adjustment", default="0", help="Difference kept as an adjustment (bank - ledger)")
@click.option("--note", default="")
@click.option(
    "--exchange-rate",
    default=None,
    help="Account currency per unit of the entries' currency, for entries in another one"
    " (default: the rate the statement lines give)",
)
def match(cli, tenant, account, lines, entries, adjustment, note, exchange_rate, as_json):
    """Match items by hand."""
    body = {
        "statement_line_ids": list(lines),
        "ledger_entry_ids": list(entries),
        "adjustment": adjustment,
        "note": note,
    }
    if exchange_rate is not None:
        body["exchange_rate"] = exchange_rate
    _show_match(cli, cli.api.post(f"{BASE}/{account}/matches", json=body, tenant=tenant), as_json)


@recon_command("accept")
@click.argument("suggestion_id")
def accept(cli, tenant, account, suggestion_id, as_json):
    """Accept a suggestion."""
    _show_match(cli, cli.api.post(f"{BASE}/{account}/suggestions/{suggestion_id}/accept", tenant=tenant), as_json)


@recon_command("unmatch")
@click.argument("match_id")
def unmatch(cli, tenant, account, match_id, as_json):
    """Undo a match: its items become open again."""
    result = cli.api.delete(f"{BASE}/{account}/matches/{match_id}", tenant=tenant)
    if as_json:
        cli.output(result, as_json=True)
    else:
        click.echo(
            f"match {result['id']} undone; {count_of(len(result['statement_lines']), 'statement line')} and "
            f"{count_of(len(result['ledger_entries']), 'ledger entry', 'ledger entries')} are open again"
        )


@recon_command("aliases")
@click.option("--remove", "remove_id", default=None, help="Forget this alias (its id in the list)")
def aliases(cli, tenant, account, remove_id, as_json):
    """What matches taught: which bank payer (IBAN, else name) paid for which ledger counterparty.

    Later statement lines from that payer score on it. With --remove, forget
    one that is wrong (a later match may teach it again).
    """
    path = f"{BASE}/{account}/aliases"
    if remove_id is not None:
        removed = cli.api.delete(f"{path}/{remove_id}", tenant=tenant)
        if as_json:
            cli.output(removed, as_json=True)
        else:
            click.echo(
                f"alias {removed['id']} removed: {removed['bank_label']} paid {removed['ledger_name']} "
                f"({count_of(removed['times'], 'match', 'matches')} taught it)"
            )
        return
    data = cli.api.get_all(path, tenant=tenant)
    cli.output(data, columns=["id", "kind", "bank_label", "ledger_name", "times", "last_at"], as_json=as_json)


def _item_line(item: dict) -> str:
    """A statement line or ledger entry on one line: what a bookkeeper recognises it by."""
    if item["side"] == "bank":
        head = f"statement line {item['id']}"
        date, name, ref = item["booking_date"], item["counterparty_name"], item["remittance"]
    else:
        head = f"ledger entry {item['id']} ({item['external_id']})"
        date, name, ref = item["date"], item["counterparty"], item["reference"]
    return "  ".join(x for x in (head, date, f"{item['amount']} {item['currency']}", name, ref) if x)


def _facts_line(facts: dict) -> str:
    parts = []
    if facts["amount_difference"] is not None:
        parts.append(f"amount difference {facts['amount_difference']} {facts['currency']}")
    parts.append(count_of(facts["days_apart"], "day") + " apart")
    if facts["name_similarity"] is not None:
        parts.append(f"names {facts['name_similarity']}% alike")
    parts.append("reference found" if facts["reference_found"] else "no reference found")
    if facts["known_payer"]:
        parts.append("known payer")
    return ", ".join(parts)


@recon_command("why")
@click.option("--line", type=int, default=None, help="Statement line id (from open-items)")
@click.option("--entry", type=int, default=None, help="Ledger entry id (from open-items)")
@click.option("--limit", type=click.IntRange(1, 20), default=5, help="Candidates to show (1..20)")
def why(cli, tenant, account, line, entry, limit, as_json):
    """Why is this item still open? Its closest candidates, each with why it was not taken."""
    if (line is None) == (entry is None):
        raise click.UsageError("name one item: --line N or --entry N")
    side, item = ("bank", line) if line is not None else ("ledger", entry)
    data = cli.api.get(
        f"{BASE}/{account}/open-items/{item}/candidates", tenant=tenant, params={"side": side, "limit": limit}
    )
    if as_json:
        cli.output(data, as_json=True)
        return
    click.echo(_item_line(data["item"]) + "  (open)")
    if data["would_match"]:
        click.echo(f"  {data['would_match']['reason']}")
    looked = data["looked_at"]
    other = ("ledger entry", "ledger entries") if side == "bank" else ("statement line", "statement lines")
    click.echo(f"{count_of(looked['items'], *other)} looked at, within {looked['days']} days of it")
    if not data["candidates"]:
        click.echo("no candidates: nothing of the other side comes near it")
    for n, c in enumerate(data["candidates"], 1):
        click.echo("")
        for k, it in enumerate(c["items"]):
            click.echo(f"{f'{n}.' if k == 0 else '  '} {_item_line(it)}")
        outcome = c["outcome"].replace("_", " ")
        if c["score"] is not None:
            click.echo(f"   {outcome} by rule {c['rule']}, score {c['score']:g}")
        else:
            click.echo(f"   {outcome}; closest rule {c['rule'] or '-'}")
        for reason in c["reasons_not_taken"]:
            click.echo(f"   - {reason}")
        if c["explanation"]:
            click.echo(f"   the rule's reasons: {c['explanation']}")
        click.echo(f"   facts: {_facts_line(c['facts'])}")
