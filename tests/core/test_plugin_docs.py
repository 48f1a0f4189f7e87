"""docs/plugin-api.md against the code: every hook is documented, and every
name the document gives a plugin author exists.

A plugin author writes code from that document; a name it spells wrong (or
that was renamed since) costs them an AttributeError at best. So every hook
of ``tierd/core/hookspecs.py`` must have a docstring and appear in the
document with its arguments, and every code name the document mentions
(``daemon.db``, ``bus.publish``, ``tierd.core.clock.iso``, the names its
examples import, ...) is looked up on the real objects: a started daemon,
its bus and database, the modules.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from tierd.core import hookspecs
from tierd.core.api import Caller
from tierd.core.cli_helpers import CliContext
from tierd.testing import DaemonProcess, LocalDaemon, Receiver

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugin-api.md"

IDENT = r"[A-Za-z_]\w*"
#: A dotted path into tierd's code, such as ``tierd.core.clock.iso``.
DOTTED = re.compile(rf"\btierd\.(?:core|testing)(?:\.{IDENT})*")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def code_spans(text: str) -> list[str]:
    """The inline code spans of the prose (fenced blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, flags=re.M | re.S)


def hook_specs() -> dict:
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("tierd_") and callable(fn)}


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names what is missing
        return obj
    raise ModuleNotFoundError(dotted)


def attribute_chains(spans: list[str], blocks: list[str], root: str) -> set[tuple[str, ...]]:
    """``root.a.b`` in the spans and blocks, as ("a", "b"); ``root.config["x"]`` gives ("config",)."""
    found = set()
    for text in spans + blocks:
        for match in re.finditer(rf"(?<![\w.]){root}((?:\.{IDENT})+)", text):
            found.add(tuple(match.group(1).lstrip(".").split(".")))
    return found


def test_every_hookspec_has_a_docstring_that_says_when_it_is_called():
    specs = hook_specs()
    assert len(specs) >= 10
    for name, fn in specs.items():
        doc = inspect.getdoc(fn) or ""
        assert len(doc.split()) >= 15, f"{name}: the hookspec needs a docstring (when, with what, what it returns)"
        assert "Called" in doc, f"{name}: the docstring should say when the hook is called"


def test_every_hookspec_is_documented_with_its_arguments():
    spans = code_spans(doc_text())
    documented = {}
    for span in spans:
        match = re.fullmatch(r"(tierd_\w+)\(([\w, ]*)\)", span)
        if match:
            documented[match.group(1)] = [a.strip() for a in match.group(2).split(",") if a.strip()]
    for name, fn in hook_specs().items():
        assert name in documented, f"{name} is not documented in {DOC.name} as `{name}(arguments)`"
        assert documented[name] == list(inspect.signature(fn).parameters), (
            f"{DOC.name} gives {name} the arguments {documented[name]}, "
            f"hookspecs.py {list(inspect.signature(fn).parameters)}"
        )


def test_every_hook_the_document_names_exists():
    text = doc_text()
    named = {m for span in code_spans(text) for m in re.findall(r"(?<![\w.])tierd_[a-z_]+", span)}
    # In examples: hookimpls (def tierd_x) and hook calls (pm.hook.tierd_x).
    for block in code_blocks(text):
        named |= set(re.findall(r"(?:def |hook\.)(tierd_[a-z_]+)", block))
    assert named, "the document names no hook"
    unknown = named - set(hook_specs())
    assert not unknown, f"{DOC.name} names hooks that tierd/core/hookspecs.py does not declare: {sorted(unknown)}"


def test_every_dotted_name_and_file_exists():
    text = doc_text()
    names = {m.group(0) for m in DOTTED.finditer(text)}  # prose, headings and examples
    assert "tierd.core.storage.Database" in names
    for dotted in sorted(names):
        resolve(dotted)
    for span in code_spans(text):
        if re.fullmatch(r"[\w/.-]+\.py", span):
            assert (ROOT / span).is_file(), f"{DOC.name} names {span}, which does not exist"


def test_every_name_the_examples_import_exists():
    imports = 0
    for block in code_blocks(doc_text()):
        for module, names in re.findall(r"^from (tierd[\w.]*) import (\([^)]*\)|.*)$", block, re.M):
            for name in re.split(r"[\s,()]+", names):
                if name:
                    imports += 1
                    assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"
    assert imports >= 20


def test_request_helpers_are_named_as_the_code_has_them():
    text = doc_text()
    # Core keeps the daemon and the caller under typed aiohttp keys: a plugin
    # reaches them through daemon_of(request) and caller(request), never by a
    # string key (request.app["daemon"] raises KeyError).
    assert not re.search(r"request(\.app)?\[\s*[\"']", text), "the document reads request state by a string key"
    for attr in attribute_chains(code_spans(text), code_blocks(text), r"caller\(request\)"):
        assert attr[0] in Caller.__dataclass_fields__, f"caller(request).{attr[0]} does not exist"
    assert "caller(request).tenant" in text


def test_helper_objects_have_the_methods_the_document_names():
    spans = code_spans(doc_text())
    owners = {"cli": [CliContext], "d": [LocalDaemon, DaemonProcess], "r": [Receiver]}
    for root, classes in owners.items():
        chains = attribute_chains(spans, [], root)  # the examples use these letters for other things
        assert chains, f"no {root}.x in the document"
        for chain in chains:
            assert any(hasattr(cls, chain[0]) for cls in classes) or chain[0] in _instance_attributes(classes), (
                f"{root}.{chain[0]}: no such attribute on {[c.__name__ for c in classes]}"
            )


def _instance_attributes(classes: list[type]) -> set[str]:
    """Attributes that the classes' __init__ set (``self.x = ...``)."""
    names = set()
    for cls in classes:
        names |= set(re.findall(rf"self\.({IDENT})\s*(?::[^=]+)?=", inspect.getsource(cls.__init__)))
    return names


@pytest.fixture
async def running(tmp_path):
    async with LocalDaemon(tmp_path) as d:
        yield d.daemon


async def test_daemon_attributes_exist_on_a_running_daemon(running):
    text = doc_text()
    spans, blocks = code_spans(text), code_blocks(text)
    # (The testing example calls its LocalDaemon fixture "daemon".)
    chains = attribute_chains(spans, [b for b in blocks if "tierd.testing" not in b], "daemon")
    assert ("db",) in chains and ("registries", "event_types") in chains
    for chain in chains:
        obj = running
        for i, attr in enumerate(chain):
            assert hasattr(obj, attr), f"daemon.{'.'.join(chain[: i + 1])} does not exist on a running daemon"
            obj = getattr(obj, attr)

    # The table's type column: `daemon.db` | `tierd.core.storage.Database` ...
    typed = re.findall(rf"^\| `daemon\.({IDENT})` \| `(tierd\.core[\w.]+)`", text, re.M)
    assert len(typed) >= 4
    for attr, dotted in typed:
        cls = resolve(dotted)
        if attr == "db" and running.db.dialect == "postgresql":
            cls = resolve("tierd.core.pg.PgDatabase")  # its counterpart, with the same calls (checked below)
        assert isinstance(getattr(running, attr), cls), f"daemon.{attr} is not a {dotted}"

    # The bus and the database as the examples use them.
    for root, obj in (("bus", running.bus), ("db", running.db)):
        chains = attribute_chains(spans, blocks, root)
        assert chains
        for chain in chains:
            assert hasattr(obj, chain[0]), f"{root}.{chain[0]} does not exist on {type(obj).__name__}"
    async with running.db.transaction() as tx:
        for chain in attribute_chains(spans, blocks, "tx"):
            assert hasattr(tx, chain[0]), f"tx.{chain[0]} does not exist in a transaction"
