"""What the log hides (tokens, secrets) and what it must keep readable (hook
and metric names, which share the ``tierd_`` prefix with tokens)."""

from tierd.core.logs import redact


def test_tokens_are_hidden_but_hook_and_metric_names_are_not(tierd_daemon):
    d = tierd_daemon({"logging": {"level": "DEBUG"}}, env={"TIERD_TRACE_HOOKS": "1"})
    token = d.create_tenant("acme")
    status, _ = d.request("GET", "/v1/events", token=token, headers={"X-Debug": token})
    assert status == 200
    d.stop()
    log = d.logs()
    assert token not in log
    # The hook trace names every hook it calls, long names included.
    for hook in ("tierd_event_consumers", "tierd_migrations", "tierd_startup"):
        assert hook in log, hook
    assert "tierd_***()" not in log


def test_redact_keeps_names_and_hides_every_secret_form():
    admin = "tierd_admin_" + "Ab3" * 14 + "x"
    tenant = "tierd_" + "q9Z" * 14 + "k"
    text = redact(
        f"{admin} {tenant} whsec_c2VjcmV0c2VjcmV0 Bearer abc.def.ghi "
        "tierd_webhook_first_attempt_delay_seconds_bucket tierd_register_channels"
    )
    assert admin not in text and tenant not in text and "c2VjcmV0c2VjcmV0" not in text and "abc.def.ghi" not in text
    assert "tierd_webhook_first_attempt_delay_seconds_bucket" in text and "tierd_register_channels" in text
