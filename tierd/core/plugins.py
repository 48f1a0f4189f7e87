"""The plugin manager: built-ins and third-party plugins, loaded the same way.

Set ``TIERD_TRACE_HOOKS=1`` to log every hook call with its arguments and
results (as datasette does): the cheapest way to see what a plugin does.

Set ``TIERD_PLUGINS=module[,module...]`` to load plugin modules by import
name besides the installed entry points (as pytest's ``PYTEST_PLUGINS``): a
plugin under development, or in a test, runs without being installed.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Mapping, Sequence

import pluggy
from pluggy import HookCaller, HookImpl, Result

from tierd.core import hookspecs

hookimpl = pluggy.HookimplMarker("tierd")

#: Built-in modules, registered exactly like entry points of the "tierd" group.
DEFAULT_PLUGINS = (
    "tierd.plugins.webhooks",
    "tierd.plugins.notifications",
    "tierd.plugins.reconciliation",
    "tierd.plugins.reports",
)

log = logging.getLogger("tierd.plugins")


def make_plugin_manager(
    disabled: list[str] | tuple = (),
    load_entrypoints: bool = True,
    builtins: tuple = DEFAULT_PLUGINS,
    plugins: tuple | list = (),
) -> pluggy.PluginManager:
    """Build a fresh plugin manager (one per daemon or test, never global).

    ``disabled`` holds plugin names (``webhooks`` or ``tierd.plugins.webhooks``
    for built-ins, the entry-point name for third parties, the module name for
    those loaded by name). ``plugins`` holds more plugins to load: modules or
    their import names; with ``load_entrypoints``, so do ``$TIERD_PLUGINS``.
    """
    pm = pluggy.PluginManager("tierd")
    pm.add_hookspecs(hookspecs)
    blocked = set(disabled)
    for name in builtins:
        short = name.rsplit(".", 1)[-1]
        if name in blocked or short in blocked:
            pm.set_blocked(name)
            continue
        module = importlib.import_module(name)
        pm.register(module, name=name)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints("tierd")
        plugins = (*_names_from_env(), *plugins)
    for plugin in plugins:
        _register_by_name(pm, plugin, blocked)
    # A misspelt hookimpl name fails loudly instead of silently doing nothing.
    pm.check_pending()
    if os.environ.get("TIERD_TRACE_HOOKS"):
        _trace(pm)
    return pm


def _names_from_env() -> list[str]:
    return [name.strip() for name in os.environ.get("TIERD_PLUGINS", "").split(",") if name.strip()]


def _register_by_name(pm: pluggy.PluginManager, plugin: object, blocked: set[str]) -> None:
    """Register a module (or the module an import name names) under its module name."""
    name = plugin if isinstance(plugin, str) else getattr(plugin, "__name__", None) or repr(plugin)
    if name in blocked or name.rsplit(".", 1)[-1] in blocked:
        return
    if isinstance(plugin, str):
        plugin = importlib.import_module(plugin)
    # Both installed and named (a package under development): load it once.
    if not pm.is_registered(plugin) and pm.get_plugin(name) is None:
        pm.register(plugin, name=name)


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[HookImpl], kwargs: Mapping[str, object]) -> None:
        log.debug("hook %s(%s) -> %s", hook_name, ", ".join(kwargs), [i.plugin_name for i in impls])

    def after(outcome: Result[object], hook_name: str, impls: Sequence[HookImpl], kwargs: Mapping[str, object]) -> None:
        log.debug(
            "hook %s returned %r", hook_name, outcome.get_result() if not outcome.exception else outcome.exception
        )

    pm.add_hookcall_monitoring(before, after)


async def await_me_maybe(value: object) -> object:
    """Await ``value`` if it is awaitable (hooks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_async(hook: HookCaller, **kwargs: object) -> list:
    """Call a hook and await every awaitable result, in registration order."""
    return [await await_me_maybe(r) for r in hook(**kwargs)]


def get_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """Name, version, origin and implemented hooks of every loaded plugin."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        dist = dists.get(id(plugin))
        if dist is not None:
            origin, version = f"entry point ({dist.project_name})", dist.version
        elif name in DEFAULT_PLUGINS:
            from tierd import __version__

            origin, version = "built-in", __version__
        else:  # loaded by name ($TIERD_PLUGINS), not installed
            origin, version = "module", str(getattr(plugin, "__version__", "unknown"))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append(
            {
                "name": name,
                "version": version,
                "origin": origin,
                "module": getattr(plugin, "__name__", repr(plugin)),
                "hooks": hooks,
            }
        )
    return sorted(out, key=lambda p: (p["origin"] != "built-in", p["name"]))
