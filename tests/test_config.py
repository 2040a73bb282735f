"""Settings come from one table; a bad environment is refused with every problem named."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from stream.config import (
    SETTINGS,
    SETTINGS_DOC,
    Settings,
    help_text,
    markdown_table,
    parse_duration,
)
from stream.errors import ConfigError, InvalidSettings


def _refused(env: dict[str, str]) -> dict[str, str]:
    """Setting -> message of every error `from_env` reports for `env`."""
    with pytest.raises(InvalidSettings) as caught:
        Settings.from_env(env)
    return {error.setting: str(error) for error in caught.value.errors}


def test_defaults_come_from_the_table() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    for row in SETTINGS:
        assert getattr(settings, row.field) == row.parse(row.default), row.env
        assert Settings.from_env({row.env: row.default}) == settings, row.env
    assert settings.retry_topics == (
        "sms.inbound.retry.1",
        "sms.inbound.retry.2",
        "sms.inbound.retry.3",
    )
    assert settings.dlq_topic == "sms.inbound.dlq"


def test_every_field_has_one_row_with_a_unique_env_name() -> None:
    assert [row.field for row in SETTINGS] == [f.name for f in dataclasses.fields(Settings)]
    assert len(SETTINGS_DOC) == len(SETTINGS)
    assert all(row.env.startswith("STREAM_") and row.doc for row in SETTINGS)


def test_new_operability_settings_and_their_defaults() -> None:
    settings = Settings()
    assert settings.dlq_halt_ratio == 0.5
    assert settings.dlq_halt_min == 200
    assert settings.dlq_halt_window_s == 60.0
    assert settings.halt_probe_interval_s == 10.0
    assert settings.log_format == "auto"
    assert settings.create_topic is False
    assert settings.session_timeout_s == 10.0
    assert settings.rebalance_timeout_s == 30.0
    assert settings.drain_timeout_s < settings.rebalance_timeout_s
    parsed = Settings.from_env(
        {
            "STREAM_DLQ_HALT_RATIO": "1",
            "STREAM_DLQ_HALT_MIN": "5",
            "STREAM_DLQ_HALT_WINDOW": "2m",
            "STREAM_HALT_PROBE_INTERVAL": "500ms",
            "STREAM_LOG_FORMAT": "JSON",
            "STREAM_CREATE_TOPIC": "True",
            "STREAM_SESSION_TIMEOUT_MS": "45000",
            "STREAM_REBALANCE_TIMEOUT_MS": "60000",
        }
    )
    assert parsed.dlq_halt_ratio == 1.0
    assert parsed.dlq_halt_min == 5
    assert parsed.dlq_halt_window_s == 120.0
    assert parsed.halt_probe_interval_s == 0.5
    assert parsed.log_format == "json"
    assert parsed.create_topic is True
    assert (parsed.session_timeout_s, parsed.rebalance_timeout_s) == (45.0, 60.0)


def test_values_the_old_reader_refused_are_accepted() -> None:
    settings = Settings.from_env({"STREAM_RATE_MAX": "0.5", "STREAM_LOG_LEVEL": "info"})
    assert settings.rate_max == 0.5
    assert settings.log_level == "INFO"
    assert Settings.from_env({"STREAM_PROCESSOR": " BUILTIN "}).processor == "builtin"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"STREAM_BATCH_MAX": "lots"}, "STREAM_BATCH_MAX"),
        ({"STREAM_BATCH_MAX": "0"}, "STREAM_BATCH_MAX"),
        ({"STREAM_PROCESSOR": "gpt"}, "STREAM_PROCESSOR"),
        ({"STREAM_PROCESSOR": "http"}, "STREAM_API_URL"),
        ({"STREAM_API_URL": "ftp://x"}, "STREAM_API_URL"),
        ({"STREAM_RETRY_DELAYS": "5s,soon"}, "STREAM_RETRY_DELAYS"),
        ({"STREAM_RETRY_DELAYS": ""}, "STREAM_RETRY_DELAYS"),
        ({"STREAM_LIMIT_MIN": "10", "STREAM_LIMIT_MAX": "5"}, "STREAM_LIMIT_MAX"),
        ({"STREAM_LIMIT_INITIAL": "999"}, "STREAM_LIMIT_INITIAL"),
        ({"STREAM_MAX_IN_FLIGHT": "100"}, "STREAM_MAX_IN_FLIGHT"),
        ({"STREAM_METRICS_PORT": "70000"}, "STREAM_METRICS_PORT"),
        ({"STREAM_LOG_LEVEL": "LOUD"}, "STREAM_LOG_LEVEL"),
        ({"STREAM_LOG_FORMAT": "xml"}, "STREAM_LOG_FORMAT"),
        ({"STREAM_RATE_MAX": "nan"}, "STREAM_RATE_MAX"),
        ({"STREAM_RATE_MAX": "-1"}, "STREAM_RATE_MAX"),
        ({"STREAM_DLQ_HALT_RATIO": "1.5"}, "STREAM_DLQ_HALT_RATIO"),
        ({"STREAM_DLQ_HALT_MIN": "0"}, "STREAM_DLQ_HALT_MIN"),
        ({"STREAM_DLQ_HALT_WINDOW": "60"}, "STREAM_DLQ_HALT_WINDOW"),
        ({"STREAM_HALT_PROBE_INTERVAL": "2h"}, "STREAM_HALT_PROBE_INTERVAL"),
        ({"STREAM_CREATE_TOPIC": "maybe"}, "STREAM_CREATE_TOPIC"),
        ({"STREAM_SESSION_TIMEOUT_MS": "1000"}, "STREAM_SESSION_TIMEOUT_MS"),
        ({"STREAM_DRAIN_TIMEOUT_MS": "30000"}, "STREAM_DRAIN_TIMEOUT_MS"),
        ({"STREAM_REBALANCE_TIMEOUT_MS": "10000"}, "STREAM_DRAIN_TIMEOUT_MS"),
        ({"STREAM_TOPIC": " "}, "STREAM_TOPIC"),
        ({"STREAM_TOPIC": "sms inbound"}, "STREAM_TOPIC"),
        ({"STREAM_TOPIC": "a" * 245}, "STREAM_TOPIC"),
        ({"STREAM_GROUP_ID": ""}, "STREAM_GROUP_ID"),
        ({"STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAM_KAFKA_SASL_MECHANISM"),
        ({"STREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "STREAM_KAFKA_SASL_MECHANISM"),
        ({"STREAM_BATCH_SIZE": "10"}, "STREAM_BATCH_SIZE"),
        ({"STREAM_API_TOKEN": "tok\r\nX-Injected: 1"}, "STREAM_API_TOKEN"),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], setting: str) -> None:
    refused = _refused(env)
    assert list(refused) == [setting]
    assert refused[setting].startswith(f"{setting}: ")


def test_a_refused_token_is_not_echoed() -> None:
    (message,) = _refused({"STREAM_API_TOKEN": "s3cret\x01"}).values()
    assert "s3cret" not in message


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "STREAM_BATCH_SIZE": "10",
        "STREAM_BATCH_MAX": "lots",
        "STREAM_RATE_MAX": "fast",
        "STREAM_LOG_LEVEL": "loud",
        "STREAM_PROCESSOR": "http",
        "STREAM_DRAIN_TIMEOUT_MS": "40000",
    }
    with pytest.raises(InvalidSettings) as caught:
        Settings.from_env(env)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert [e.setting for e in error.errors] == [
        "STREAM_BATCH_SIZE",
        "STREAM_BATCH_MAX",
        "STREAM_RATE_MAX",
        "STREAM_LOG_LEVEL",
        "STREAM_API_URL",
        "STREAM_DRAIN_TIMEOUT_MS",
    ]
    assert error.setting == "STREAM_BATCH_SIZE"
    assert str(error).splitlines() == [str(e) for e in error.errors]


def test_a_refused_setting_does_not_cause_follow_up_errors() -> None:
    """With STREAM_BATCH_MAX refused, STREAM_MAX_IN_FLIGHT is not compared to its default."""
    refused = _refused({"STREAM_BATCH_MAX": "lots", "STREAM_MAX_IN_FLIGHT": "100"})
    assert list(refused) == ["STREAM_BATCH_MAX"]


def test_durations_and_http_settings() -> None:
    assert parse_duration("X", "250ms") == 0.25
    assert parse_duration("X", "5m") == 300
    with pytest.raises(ConfigError) as caught:
        parse_duration("X", "soon")
    assert caught.value.setting == "X"
    settings = Settings.from_env(
        {
            "STREAM_PROCESSOR": "http",
            "STREAM_API_URL": "http://127.0.0.1:8080/v1/parse",
            "STREAM_API_TOKEN": "s3cret",
            "STREAM_RETRY_DELAYS": "1s, 2s",
            "STREAM_API_TIMEOUT_MS": "2500",
        }
    )
    assert settings.retry_delays_s == (1.0, 2.0)
    assert math.isclose(settings.api_timeout_s, 2.5)
    assert "s3cret" not in repr(settings)


def test_masked_is_an_object_with_typed_values_and_secrets_hidden() -> None:
    settings = Settings().replace(api_token="s3cret", kafka_sasl_password="hunter2")
    masked = settings.masked()
    assert masked["api_token"] == masked["kafka_sasl_password"] == "***"
    assert Settings().masked()["api_token"] == ""
    assert masked["batch_max"] == 500
    assert masked["retry_delays_s"] == (5.0, 30.0, 300.0)
    assert set(masked) == {row.field for row in SETTINGS}
    assert "s3cret" not in str(masked)


def test_help_and_markdown_list_every_setting_with_its_default() -> None:
    help_lines = help_text().splitlines()
    table = markdown_table().splitlines()
    for row in SETTINGS:
        assert f"  {row.env} [{row.default}]" in help_lines
        assert any(line.startswith(f"| `{row.env}` | ") for line in table), row.env
    assert "| `STREAM_DLQ_HALT_WINDOW` | `60s` |" in markdown_table()
    assert "| `STREAM_API_URL` | (empty) |" in markdown_table()


def test_retry_level_is_read_from_the_exact_topic_name() -> None:
    settings = Settings(topic="sms.inbound", retry_delays_s=(1.0, 2.0))
    assert [settings.retry_level(t) for t in settings.retry_topics] == [1, 2]
    assert settings.retry_level("sms.inbound.retry.7") == 7, "levels it does not configure"
    for other in ("sms.inbound", "sms.inbound.dlq", "sms.inbound.retry.0", "sms.inbound.retry.01",
                  "sms.inbound.retry.", "sms.inbound.retry.2x", "sms.inboundx.retry.1",
                  "other.retry.1", "sms.inbound.retry.\u0661"):
        assert settings.retry_level(other) == 0, other


def test_group_instance_id_must_be_a_kafka_identifier() -> None:
    env = {"STREAM_KAFKA_GROUP_INSTANCE_ID": "stream-processor-0"}
    assert Settings.from_env(env).kafka_group_instance_id == "stream-processor-0"
    assert Settings().kafka_group_instance_id == "", "dynamic membership by default"
    with pytest.raises(InvalidSettings) as refused:
        Settings.from_env({"STREAM_KAFKA_GROUP_INSTANCE_ID": "pod 0"})
    assert [e.setting for e in refused.value.errors] == ["STREAM_KAFKA_GROUP_INSTANCE_ID"]


def test_client_certificates_need_the_httpx_backend_and_a_file(tmp_path: Path) -> None:
    pem = tmp_path / "client.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert set(_refused({"STREAM_API_CLIENT_CERT": str(pem)})) == {"STREAM_API_CLIENT_CERT"}
    assert set(_refused({"STREAM_API_CLIENT_KEY": str(pem)})) == {"STREAM_API_CLIENT_KEY"}
    missing = _refused({"STREAM_HTTP_CLIENT": "httpx", "STREAM_API_CLIENT_CERT": "/nope.pem"})
    assert "/nope.pem" in missing["STREAM_API_CLIENT_CERT"]
    assert _refused({"STREAM_HTTP_CLIENT": "curl"}).keys() == {"STREAM_HTTP_CLIENT"}
    env = {"STREAM_HTTP_CLIENT": "httpx", "STREAM_API_CLIENT_CERT": str(pem)}
    settings = Settings.from_env(env)
    assert (settings.http_client, settings.api_client_cert) == ("httpx", str(pem))
