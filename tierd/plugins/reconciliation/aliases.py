"""What reviewers taught: which bank counterparty pays for which ledger counterparty.

Every match (by hand, an accepted suggestion, or a run's automatic one) that
joins a statement line with a payer key (``text.payer_keys``: the IBAN, else
the name) to ledger entries of a counterparty is remembered per tenant and
account in ``recon_aliases``; ``recon_alias_sources`` says which match taught
which alias, so undoing a match forgets exactly its share. The engine reads
them back as :class:`KnownPayer` (``EngineConfig.known_payers``).
"""

from __future__ import annotations

from .matching.model import KnownPayer


async def known_payers(db, tenant: str, account_id: str) -> list[KnownPayer]:
    """Everything the account's matches taught, as the engine takes it."""
    rows = await db.fetchall(
        "SELECT bank_key, bank_label, ledger_key, ledger_name, times FROM recon_aliases"
        " WHERE tenant_id=? AND account_id=? AND times>0 ORDER BY id",
        (tenant, account_id),
    )
    return [KnownPayer(r["bank_key"], r["bank_label"], r["ledger_key"], r["ledger_name"], r["times"]) for r in rows]
