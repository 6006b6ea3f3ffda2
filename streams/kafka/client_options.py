"""Connection options for every Kafka client of the project: the worker's Faust
app, its stage consumer, the admin client and callers' clients, all from `kafka:`."""

from __future__ import annotations

import ssl
from typing import Any

from streams.config import KafkaConfig


def kafka_client_options(kafka: KafkaConfig) -> dict[str, Any]:
    """aiokafka options (admin client, callers' clients) matching the worker's."""
    if kafka.bootstrap_servers is None:
        raise ValueError("kafka.bootstrap_servers is not set (start the embedded broker first)")
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = kafka_ssl_context(kafka)
    if kafka.sasl_mechanism is not None:
        password = kafka.sasl_password()
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def kafka_ssl_context(kafka: KafkaConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    return context


def faust_credentials(kafka: KafkaConfig) -> Any:
    import faust  # here, not at the top: callers' tools (`fallback send`) never load Faust

    if kafka.sasl_mechanism is not None:
        password = kafka.sasl_password()
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=kafka_ssl_context(kafka) if kafka.security_protocol == "SASL_SSL" else None,
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kafka_ssl_context(kafka))
    return None
