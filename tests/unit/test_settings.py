"""Settings read from the environment: the documented defaults, and errors naming the
variable at fault."""

from __future__ import annotations

import pytest

from service.settings import ConfigError, Settings


def test_settings_defaults_match_the_spec():
    settings = Settings.from_env({}, demo=True)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.xai_base_url == "https://api.x.ai/v1"
    assert settings.failure_mode == "local"
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.lease_seconds == 30
    assert settings.vision_fallback == "json"
    assert settings.redis_url is None


def test_every_redis_scheme_of_the_spec_is_accepted():
    for url in (
        "redis://r:6379/0",
        "rediss://r:6380",
        "redis+sentinel://s1:26379,s2:26379/mymaster",
        "redis+cluster://c:7000",
    ):
        assert Settings.from_env({"REDIS_URL": url}, demo=True).redis_url == url


def test_config_error_names_the_variable():
    with pytest.raises(ConfigError, match="CONCURRENCY_LEASE_SECONDS"):
        Settings.from_env({"CONCURRENCY_LEASE_SECONDS": "soon"}, demo=True)


def test_relay_and_upstream_settings_have_their_documented_defaults():
    settings = Settings.from_env({}, demo=True)
    assert settings.sse_max_event_bytes == 1024 * 1024
    assert settings.upstream_max_response_bytes == 64 * 1024 * 1024
    assert settings.upstream_status_interval == 60
    assert (settings.default_vision_model, settings.default_image_model) == (
        "grok-4.3",
        "grok-imagine-image",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSE_MAX_EVENT_BYTES", "0"),
        ("UPSTREAM_MAX_RESPONSE_BYTES", "64MiB"),
        ("UPSTREAM_STATUS_INTERVAL_SECONDS", "-1"),
        ("DEFAULT_VISION_MODEL", "grok 4"),
    ],
)
def test_bad_relay_and_upstream_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value}, demo=True)


def test_cache_affinity_is_on_unless_turned_off():
    assert Settings.from_env({}, demo=True).cache_affinity is True
    assert Settings.from_env({"GATEWAY_CACHE_AFFINITY": "off"}, demo=True).cache_affinity is False
    with pytest.raises(ConfigError, match="GATEWAY_CACHE_AFFINITY"):
        Settings.from_env({"GATEWAY_CACHE_AFFINITY": "sometimes"}, demo=True)


def test_stream_usage_is_the_openai_way_unless_set_to_passthrough():
    assert Settings.from_env({}, demo=True).stream_usage == "openai"
    env = {"GATEWAY_STREAM_USAGE": "passthrough"}
    assert Settings.from_env(env, demo=True).stream_usage == "passthrough"
    with pytest.raises(ConfigError, match="GATEWAY_STREAM_USAGE"):
        Settings.from_env({"GATEWAY_STREAM_USAGE": "sum"}, demo=True)


def test_the_demo_key_is_taken_from_gateway_demo_key():
    assert Settings.from_env({}, demo=True).demo_key == ""
    env = {"GATEWAY_DEMO_KEY": "gk-my-demo-key"}
    assert Settings.from_env(env, demo=True).demo_key == "gk-my-demo-key"
