"""Normalising references and names so that they can be looked up and compared.

References: banks and customers write "INV-1043", "inv 1043", "INV1043" or
"Rechnung Nr. INV/1043" for the same invoice. As Odoo does, a reference is
reduced to its upper-case letters and digits; the remittance text is cut
into tokens, and runs of up to three adjacent tokens are joined, so that a
reference split by punctuation or spaces is found by a hash lookup instead of
a substring search over every pair.

Names: compared in one normal form, made here and nowhere else. Case and
punctuation go; umlauts and ß are transliterated as Germans write them
without (ä→ae, ö→oe, ü→ue, ß→ss), so "Müller" and "Mueller" are the same name
while a bank's "MULLER" stays close (92%); legal forms go, multi-word ones too
("GmbH & Co. KG", "u. Co. KG", "G.m.b.H.", "e.K.", "Gesellschaft mit
beschränkter Haftung"), since the same customer is written with and without
them. The remaining words are both the text rapidfuzz compares and the keys
that block names into small groups. A name cut by the bank (SEPA fields hold
70 characters, older formats 27) is compared as a prefix of the full one.
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

#: Legal forms and the filler words around them, as words of a normalised
#: name (dots are gone, so "G.m.b.H." is "gmbh" and "e. K." is "e k"; "u"
#: is what is left of "u. Co. KG"). Dropped wherever they stand.
LEGAL_FORMS = frozenset(
    "gmbh ggmbh mbh gesellschaft ag kg kgaa ohg gbr ek e kfm ekfm ev eg u ug haftungsbeschraenkt haftungsbeschr "
    "se partg mbb "
    "co corp corporation inc "
    "incorporated llc ltd limited plc sa sas sarl srl spa bv nv oy ab as aps sp zoo the und and cie company".split()
)

#: Legal forms spelt out in words, replaced by their abbreviation before the words are split.
_LONG_FORMS = (
    (re.compile(r"\bgesellschaft mit beschraenkter haftung\b"), "gmbh"),
    (re.compile(r"\bgesellschaft mbh\b"), "gmbh"),
    (re.compile(r"\baktiengesellschaft\b"), "ag"),
    (re.compile(r"\bkommanditgesellschaft\b"), "kg"),
    (re.compile(r"\boffene handelsgesellschaft\b"), "ohg"),
    (re.compile(r"\beingetragene[rn]? (?:kaufmann|kauffrau)\b"), "ek"),
    (re.compile(r"\beingetragener verein\b"), "ev"),
)

#: Every long form above contains one of these; most names none.
_LONG_FORM_HINT = re.compile(r"gesellschaft|kauf|verein")

#: German letters as they are written where the character set lacks them.
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})

#: A name this long (letters and digits) that starts another is that name cut
#: short by the bank, not a different party: shorter prefixes ("Bau") are common.
MIN_TRUNCATED = 18


def norm_ref(text: str) -> str:
    """``"inv-1043 "`` -> ``"INV1043"``."""
    return "".join(_TOKEN.findall((text or "").upper()))


_HAS_DIGIT = re.compile(r"\d").search


def is_reference(key: str) -> bool:
    """A key worth indexing: long enough and with a digit (not a plain word)."""
    return len(key) >= MIN_REFERENCE_LENGTH and _HAS_DIGIT(key) is not None


_DIGIT_RUN = re.compile(r"\d+")
_YEAR = re.compile(r"(19|20)\d\d")
#: A serial this short is too likely to be something else (a day, a year, an amount).
MIN_SERIAL_LENGTH = 5


def short_keys(reference: str) -> frozenset[str]:
    """What payers keep of an invoice number when they drop its prefix: ``"RE-2026-10431"`` ->
    ``{"10431", "202610431"}``.

    "Rg.Nr. 10431" and "2026-10431" are how customers write RE-2026-10431;
    the number's last run of digits (its serial, when long enough not to be
    a year or a day) and all its digits together are looked up too. They are
    only ever used next to another check (equal amounts, a tolerance, a sum).
    """
    runs = _DIGIT_RUN.findall(reference or "")
    keys = set()
    if runs and len(runs[-1]) >= MIN_SERIAL_LENGTH and not _YEAR.fullmatch(runs[-1]):
        keys.add(runs[-1])
    joined = "".join(runs)
    if len(runs) > 1 and len(joined) >= MIN_SERIAL_LENGTH + 2:
        keys.add(joined)
    keys.discard(norm_ref(reference))
    return frozenset(keys)


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


def swapped_key(keys: frozenset[str], grams: frozenset[str]) -> str | None:
    """The key found in ``grams`` with two adjacent characters swapped (a "Zahlendreher"), if any.

    The payer's commonest typo. A ratio says a transposition in a short
    serial ("11887" for "11878") is only 80% alike, no more than the next
    invoice's number; looked for as what it is, it is told apart.
    """
    for key in sorted(keys):
        for i in range(len(key) - 1):
            if key[i] != key[i + 1] and key[:i] + key[i + 1] + key[i] + key[i + 2 :] in grams:
                return key
    return None


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


def fold(text: str) -> str:
    """Lower case, German letters transliterated, other accents dropped: ``"Müßig"`` -> ``"muessig"``."""
    low = (text or "").lower()
    if low.isascii():
        return low
    return strip_accents(unicodedata.normalize("NFC", low).translate(_TRANSLIT))


def _join_letters(words: list[str]) -> list[str]:
    """Runs of single letters are one abbreviation: "G.m.b.H." and "G. m. b. H." are "gmbh", "S.A." is "sa"."""
    out: list[str] = []
    run = ""
    for w in words:
        if len(w) == 1 and w.isalpha():
            run += w
            continue
        if run:
            out.append(run)
            run = ""
        out.append(w)
    if run:
        out.append(run)
    return out


@functools.lru_cache(maxsize=1 << 18)  # names repeat: the same customers pay again and again
def norm_name(text: str) -> str:
    """``"Müller Bau G.m.b.H. & Co. KG"`` -> ``"mueller bau"``: the form names are compared in."""
    folded = fold(text)
    if _LONG_FORM_HINT.search(folded):
        for pattern, short in _LONG_FORMS:
            folded = pattern.sub(short, folded)
    words = _join_letters(_WORD.findall(folded))
    kept = [w for w in words if w not in LEGAL_FORMS]
    if len(kept) >= 2 and kept[-1] == words[-1] and _cut_legal_form(words, may_be_cut(text)):
        kept.pop()  # "Lang & Weiß Gesellschaft m", "Fischer UG (h", "Müller Gesell": the bank cut the legal form
    return " ".join(kept or words)


def _cut_legal_form(words: list[str], cut: bool) -> bool:
    """The last word is what is left of a legal form the bank cut: the start of one, after
    another legal form, or (in a name of the length banks cut at) anywhere."""
    last = words[-1]
    starts = any(form.startswith(last) and form != last for form in LEGAL_FORMS)
    return starts and ((len(last) <= 4 and words[-2] in LEGAL_FORMS) or cut)


@functools.lru_cache(maxsize=1 << 18)
def flat_name(text: str) -> str:
    """``"Zoqui nSA"`` -> ``"zoquinsa"``: letters and digits only, legal form kept.

    Compared next to the word-wise form, it forgives a space in the wrong
    place (banks wrap and cut names), which splits words differently.
    """
    return "".join(_WORD.findall(fold(text)))


@functools.lru_cache(maxsize=1 << 18)
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


def may_be_cut(raw: str) -> bool:
    """A bank's name of exactly the length SEPA formats cut at (27, 70; 26 or 69 where a space fell there)."""
    return len((raw or "").strip()) in (26, 27, 69, 70)


def truncated(a: str, b: str, a_cut: bool = True, b_cut: bool = True) -> bool:
    """One name is the other cut short: the shorter is long enough, may have been cut, and starts the longer.

    Only a name that may have been cut counts: "Hoffmann Kältetechnik" is
    not a cut "Hoffmann Kältetechnik Neckar" but another firm.
    """
    short, long, cut = (a, b, a_cut) if len(a) <= len(b) else (b, a, b_cut)
    return cut and len(short) >= MIN_TRUNCATED and long.startswith(short)


def name_similarity(
    a: str, b: str, a_flat: str = "", b_flat: str = "", a_cut: bool = True, b_cut: bool = True
) -> float | None:
    """0..1 similarity of two names (normalised, and optionally flat); None if either is unknown.

    ``a_cut``/``b_cut`` say whether a name may have been cut by the bank
    (:func:`may_be_cut`); a cut name that starts the other is the same name.
    """
    if not a or not b:
        return None
    if a == b or truncated(a, b, a_cut, b_cut) or (a_flat and b_flat and truncated(a_flat, b_flat, a_cut, b_cut)):
        return 1.0
    # token_set_ratio alone says 100 when one name's words are a subset of
    # the other's ("Lopel" / "Rodka Lopel"): weighted 1:3 with
    # token_sort_ratio, a subset still scores ("Stadtwerke" / "Stadtwerke
    # Koeln": 83) but not as the same party: "Haustechnik Meyer" and "Meyer
    # Haustechnik Isar" are two firms more often than one.
    sim = (fuzz.token_set_ratio(a, b) + 3 * fuzz.token_sort_ratio(a, b)) / 4
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
