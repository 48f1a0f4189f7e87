"""A plugin's running state lives in one slot core provides (tierd_services):
started before the API listens, reloaded with the new configuration, stopped
before the database closes, reached with ``Service.of(daemon)``."""

import types

import pytest
import yaml

from tierd.core.api import NO_BODY, Route, daemon_of, json_response
from tierd.core.daemon import Daemon, prepare
from tierd.core.plugins import hookimpl
from tierd.core.schema import Int, Obj
from tierd.core.service import PluginService, ServiceNotRunning
from tierd.testing import LocalDaemon


class Counter(PluginService):
    name = "counter"

    def __init__(self, daemon):
        super().__init__(daemon)
        self.calls: list[str] = []
        self.step = daemon.config["counter"]["step"]
        self.value = 0

    async def start(self):
        # The database is open and migrated: a service may read it at start.
        row = await self.daemon.db.fetchone("SELECT COUNT(*) AS n FROM counter_log")
        self.value = row["n"]
        self.calls.append("start")

    async def reload(self, config):
        self.calls.append("reload")
        self.step = config["counter"]["step"]

    async def stop(self):
        self.calls.append("stop")
        # Stopped before the database closes: its last write lands.
        await self.daemon.db.execute("INSERT INTO counter_log(value) VALUES (?)", (self.value,))


def counter_plugin(log: list[str]):
    """A plugin (as a module would be) that keeps its state in a Counter service."""

    @hookimpl
    def tierd_config_schema():
        return {"counter": Obj({"step": Int(default=1)})}

    @hookimpl
    def tierd_migrations():
        table = "CREATE TABLE counter_log (value INTEGER NOT NULL)"
        return {"counter": {"sqlite": [table], "postgresql": [table]}}

    @hookimpl
    def tierd_services(daemon):
        log.append("services")
        return Counter(daemon)

    @hookimpl
    def tierd_startup(daemon):
        # The old hook still works, and runs once the services started.
        log.append(f"startup sees {Counter.of(daemon).calls}")

    @hookimpl
    def tierd_routes(daemon):
        async def bump(request):
            service = Counter.of(daemon_of(request))
            service.value += service.step
            return json_response({"value": service.value})

        return [Route("POST", "/v1/counter", bump, auth="admin", summary="Add the step", body=NO_BODY)]

    return types.SimpleNamespace(
        tierd_config_schema=tierd_config_schema,
        tierd_migrations=tierd_migrations,
        tierd_services=tierd_services,
        tierd_startup=tierd_startup,
        tierd_routes=tierd_routes,
        __name__="counter_plugin",
    )


async def test_a_service_is_started_reached_reloaded_and_stopped_in_order(tmp_path):
    log: list[str] = []
    local = LocalDaemon(tmp_path, {"counter": {"step": 1}}, plugins=[counter_plugin(log)])
    await local.start()
    daemon = local.daemon
    service = Counter.of(daemon)
    assert daemon.service("counter") is service and daemon.services["counter"] is service
    assert log == ["services", "startup sees ['start']"]
    # The built-in plugins keep theirs in the same slot.
    assert {"webhooks", "notifications", "reconciliation"} <= set(daemon.services)

    assert (await local.call("POST", "/v1/counter"))[1] == {"value": 1}
    config = yaml.safe_load(local.config_path.read_text())
    config["counter"]["step"] = 10
    local.config_path.write_text(yaml.safe_dump(config))
    assert await daemon.reload() == (True, [])
    assert service.calls == ["start", "reload"]
    assert (await local.call("POST", "/v1/counter"))[1] == {"value": 11}
    await local.stop()
    assert service.calls == ["start", "reload", "stop"]

    # What the service wrote as it stopped is there at the next start.
    again = LocalDaemon(tmp_path, {"counter": {"step": 1}}, plugins=[counter_plugin([])])
    again.port, again.config_path = local.port, local.config_path
    await again.start()
    try:
        assert Counter.of(again.daemon).value == 1  # one row: the stop's
        assert Counter.of(again.daemon) is not service  # one per daemon, never shared
    finally:
        await again.stop()


async def test_a_service_that_is_not_running_is_a_clear_error(tmp_path):
    async with LocalDaemon(tmp_path) as local:
        with pytest.raises(ServiceNotRunning, match="counter"):
            Counter.of(local.daemon)
        with pytest.raises(ServiceNotRunning, match="counter"):
            local.daemon.service("counter")
        assert Counter.running(local.daemon) is None


async def _start_refused(tmp_path, plugin) -> Exception:
    local = LocalDaemon(tmp_path, {"counter": {"step": 1}})
    pm, registries, config = prepare(local.config_path, plugins=[counter_plugin([]), plugin])
    daemon = Daemon(pm, registries, config)
    try:
        with pytest.raises(Exception) as info:
            await daemon.start()
    finally:
        await daemon.stop()
    assert not daemon.ready
    return info.value


async def test_two_services_of_one_name_are_refused(tmp_path):
    @hookimpl
    def tierd_services(daemon):
        return [Counter(daemon)]

    error = await _start_refused(tmp_path, types.SimpleNamespace(tierd_services=tierd_services, __name__="twin"))
    assert "two plugins declare the service 'counter'" in str(error)


async def test_a_service_that_is_not_a_plugin_service_is_refused(tmp_path):
    @hookimpl
    def tierd_services(daemon):
        return object()

    error = await _start_refused(tmp_path, types.SimpleNamespace(tierd_services=tierd_services, __name__="odd"))
    assert isinstance(error, TypeError) and "not a tierd.core.service.PluginService" in str(error)
