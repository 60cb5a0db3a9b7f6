"""KafkaAuth: settings become the same options for every client, SASL needs credentials, secrets stay hidden."""

from __future__ import annotations

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from workers.kafka_auth import KafkaAuth
from workers.settings import ConfigError, load_settings


def test_plaintext_adds_no_client_options_and_no_faust_credentials() -> None:
    auth = KafkaAuth.from_settings(load_settings().kafka)
    assert auth == KafkaAuth() and auth.client_options() == {} and auth.faust_credentials() is None


def test_scram_settings_become_aiokafka_options_and_faust_credentials() -> None:
    settings = load_settings(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "guard",
            "sasl_password": "s3cret",
        }
    )
    auth = KafkaAuth.from_settings(settings.kafka)
    assert auth.client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "ssl_context": None,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "guard",
        "sasl_plain_password": "s3cret",
    }
    credentials = auth.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.protocol.value == "SASL_PLAINTEXT"
    assert "s3cret" not in repr(auth) and "s3cret" not in repr(settings)


def test_tls_protocols_carry_an_ssl_context() -> None:
    assert KafkaAuth(protocol="SASL_SSL", username="u", password="p").client_options()["ssl_context"] is not None
    credentials = KafkaAuth(protocol="SSL").faust_credentials()
    assert isinstance(credentials, SSLCredentials)


def test_sasl_without_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="username and password"):
        KafkaAuth(protocol="SASL_SSL", username="u")
    with pytest.raises(ConfigError, match=r"kafka\.sasl_username and kafka\.sasl_password") as refused:
        load_settings(kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": ""})
    assert "sasl_username': 'u'" not in str(refused.value)  # the section's values are not echoed
