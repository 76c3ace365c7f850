"""Which OpenTelemetry signals the standard OTEL_* variables turn on (Settings.from_env)."""

from __future__ import annotations

import pytest

from service.settings import ConfigError, Settings

BASE = {"XAI_API_KEY": "k", "GATEWAY_KEYS_FILE": "keys.toml"}


def signals(**env: str) -> tuple[bool, bool]:
    settings = Settings.from_env({**BASE, **env})
    return settings.otel_traces, settings.otel_metrics


def test_without_an_endpoint_both_signals_are_off():
    assert signals() == (False, False)


def test_the_common_endpoint_turns_both_signals_on():
    assert signals(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318") == (True, True)


def test_a_signal_endpoint_turns_that_signal_on_alone():
    url = "http://collector:4318/v1/traces"
    assert signals(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=url) == (True, False)
    url = "http://collector:4318/v1/metrics"
    assert signals(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=url) == (False, True)


def test_an_exporter_set_to_none_turns_its_signal_off():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert signals(**endpoint, OTEL_TRACES_EXPORTER="none") == (False, True)
    assert signals(**endpoint, OTEL_METRICS_EXPORTER="none") == (True, False)


def test_sdk_disabled_turns_everything_off():
    assert signals(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318", OTEL_SDK_DISABLED="true"
    ) == (False, False)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_an_unsupported_setting_stops_start_up_naming_it(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env({**BASE, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **env})
