"""Bad configuration stops start-up with a message naming the setting."""

from __future__ import annotations

import pytest

from stream.config import SETTINGS_DOC, Settings, parse_duration
from stream.errors import ConfigError


def test_defaults_match_the_documented_table() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.retry_topics == (
        "sms.inbound.retry.1",
        "sms.inbound.retry.2",
        "sms.inbound.retry.3",
    )
    assert settings.dlq_topic == "sms.inbound.dlq"
    assert SETTINGS_DOC["STREAM_TOPIC"][0] == settings.topic
    assert int(SETTINGS_DOC["STREAM_BATCH_MAX"][0]) == settings.batch_max


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"STREAM_BATCH_MAX": "lots"}, "STREAM_BATCH_MAX"),
        ({"STREAM_BATCH_MAX": "0"}, "STREAM_BATCH_MAX"),
        ({"STREAM_PROCESSOR": "gpt"}, "STREAM_PROCESSOR"),
        ({"STREAM_PROCESSOR": "http"}, "STREAM_API_URL"),
        ({"STREAM_RETRY_DELAYS": "5s,soon"}, "STREAM_RETRY_DELAYS"),
        ({"STREAM_RETRY_DELAYS": ""}, "STREAM_RETRY_DELAYS"),
        ({"STREAM_LIMIT_MIN": "10", "STREAM_LIMIT_MAX": "5"}, "STREAM_LIMIT_MAX"),
        ({"STREAM_LIMIT_INITIAL": "999"}, "STREAM_LIMIT_INITIAL"),
        ({"STREAM_METRICS_PORT": "70000"}, "STREAM_METRICS_PORT"),
        ({"STREAM_LOG_LEVEL": "LOUD"}, "STREAM_LOG_LEVEL"),
        ({"STREAM_TOPIC": " "}, "STREAM_TOPIC"),
        ({"STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "STREAM_KAFKA_SASL_MECHANISM"),
        ({"STREAM_BATCH_SIZE": "10"}, "STREAM_BATCH_SIZE"),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_durations_and_http_settings() -> None:
    assert parse_duration("X", "250ms") == 0.25
    assert parse_duration("X", "5m") == 300
    settings = Settings.from_env(
        {
            "STREAM_PROCESSOR": "http",
            "STREAM_API_URL": "http://127.0.0.1:8080/v1/parse",
            "STREAM_API_TOKEN": "s3cret",
            "STREAM_RETRY_DELAYS": "1s,2s",
        }
    )
    assert settings.retry_delays_s == (1.0, 2.0)
    assert "s3cret" not in repr(settings)
    assert settings.masked()["api_token"] == "***"
