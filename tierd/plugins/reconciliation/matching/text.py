"""Normalising references and names so that they can be looked up and compared.

References: banks and customers write "INV-1043", "inv 1043", "INV1043" or
"Rechnung Nr. INV/1043" for the same invoice. As Odoo does, a reference is
reduced to its upper-case letters and digits; the remittance text is cut
into tokens, and runs of up to three adjacent tokens are joined, so that a
reference split by punctuation or spaces is found by a hash lookup instead of
a substring search over every pair.

Names: legal forms and punctuation are dropped ("Müller GmbH" and "MUELLER
G.M.B.H." both become "muller"/"mueller"), and the remaining words are both
the text rapidfuzz compares and the keys that block names into small groups.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from rapidfuzz import fuzz, process

_TOKEN = re.compile(r"[A-Z0-9]+")
_WORD = re.compile(r"[a-z0-9]+")

#: Shorter references are too likely to occur by chance in free text.
MIN_REFERENCE_LENGTH = 4
#: How many adjacent remittance tokens may form one reference.
MAX_GRAM_TOKENS = 3

LEGAL_FORMS = frozenset(
    "gmbh ag kg ohg ek e k ug mbh co corp corporation inc incorporated llc ltd limited plc sa sas sarl srl spa bv nv "
    "oy ab as aps sp zoo the und and & cie company".split()
)


def norm_ref(text: str) -> str:
    """``"inv-1043 "`` -> ``"INV1043"``."""
    return "".join(_TOKEN.findall((text or "").upper()))


_HAS_DIGIT = re.compile(r"\d").search


def is_reference(key: str) -> bool:
    """A key worth indexing: long enough and with a digit (not a plain word)."""
    return len(key) >= MIN_REFERENCE_LENGTH and _HAS_DIGIT(key) is not None


def ref_grams(*texts: str) -> frozenset[str]:
    """Every candidate reference key in ``texts`` (tokens and joined runs)."""
    grams: set[str] = set()
    for text in texts:
        tokens = _TOKEN.findall((text or "").upper())
        digits = [_HAS_DIGIT(t) is not None for t in tokens]
        for i in range(len(tokens)):
            joined, has_digit = "", False
            for j in range(i, min(i + MAX_GRAM_TOKENS, len(tokens))):
                joined += tokens[j]
                has_digit = has_digit or digits[j]
                if has_digit and len(joined) >= MIN_REFERENCE_LENGTH:
                    grams.add(joined)
    return frozenset(grams)


def fuzzy_ref_score(ref: str, grams: frozenset[str], cutoff: float = 80) -> float:
    """Similarity 0..1 of ``ref`` to its closest gram (typos), 0 below ``cutoff``."""
    if not ref or not grams:
        return 0.0
    best = process.extractOne(ref, grams, scorer=fuzz.ratio, score_cutoff=cutoff)
    return best[1] / 100 if best else 0.0


def strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=65536)  # names repeat: the same customers pay again and again
def norm_name(text: str) -> str:
    """``"Müller G.m.b.H."`` -> ``"muller"``: lower case, no accents, no legal form."""
    words = _WORD.findall(strip_accents((text or "").lower()).replace(".", ""))
    kept = [w for w in words if w not in LEGAL_FORMS]
    return " ".join(kept or words)


@functools.lru_cache(maxsize=65536)
def flat_name(text: str) -> str:
    """``"Zoqui nSA"`` -> ``"zoquinsa"``: letters and digits only, legal form kept.

    Compared next to the word-wise form, it forgives a space in the wrong
    place (banks wrap and cut names), which splits words differently.
    """
    return "".join(_WORD.findall(strip_accents((text or "").lower())))


@functools.lru_cache(maxsize=65536)
def name_keys(normalised: str) -> tuple[str, ...]:
    """Blocking keys of a normalised name, robust to one typo in a word.

    Each word of three letters or more gives itself, its letters sorted (a
    transposition keeps them), and its first and last four letters (a
    wrong letter spares at least one of them).
    """
    keys: set[str] = set()
    for w in normalised.split():
        if len(w) >= 3:
            keys.update((w, "~" + "".join(sorted(w)), w[:4] + "<", ">" + w[-4:]))
    return tuple(sorted(keys))


def name_similarity(a: str, b: str, a_flat: str = "", b_flat: str = "") -> float | None:
    """0..1 similarity of two names (normalised, and optionally flat); None if either is unknown."""
    if not a or not b:
        return None
    if a == b:
        return 1.0
    # token_set_ratio alone says 100 when one name's words are a subset of
    # the other's ("Lopel" / "Rodka Lopel"): averaged with token_sort_ratio,
    # a subset still scores well ("Stadtwerke" / "Stadtwerke Koeln": 90) but
    # no longer looks identical.
    sim = (fuzz.token_set_ratio(a, b) + fuzz.token_sort_ratio(a, b)) / 2
    if a_flat and b_flat:
        sim = max(sim, fuzz.ratio(a_flat, b_flat))
    return sim / 100


def norm_account(text: str) -> str:
    """``"DE89 3704 0044 0532 0130 00"`` -> ``"DE89370400440532013000"``."""
    return "".join(_TOKEN.findall((text or "").upper()))


def payer_keys(account: str, name: str) -> tuple[str, ...]:
    """The keys a bank counterparty is remembered by: its account, else its name.

    An IBAN identifies a payer better than any spelling of its name; a name
    is the key only where the bank gives no account (many CSV exports).
    """
    acct = norm_account(account)
    if len(acct) >= 6:
        return (f"iban:{acct}",)
    name = norm_name(name)
    return (f"name:{name}",) if name else ()
