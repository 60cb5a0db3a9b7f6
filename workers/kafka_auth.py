"""How every Kafka client of streamwarden authenticates: SASL (SCRAM or PLAIN), TLS, or neither.

One value, ``KafkaAuth``, built from ``kafka.*`` settings (``from_settings``) or by a client
library's caller, turns into the keyword arguments of aiokafka's clients (``client_options``) and
the credentials of the faust worker (``faust_credentials``). The password lives only in this value
and in the settings' ``SecretStr``; neither ``repr`` shows it, and nothing logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import ssl

    from faust.types.auth import CredentialsT

    from workers.settings import KafkaSettings

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


@dataclass(frozen=True, slots=True)
class KafkaAuth:
    """Security settings of one Kafka connection (the default: plaintext, no authentication).

    Raises:
        ValueError: a SASL protocol without a username and password.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism = "SCRAM-SHA-256"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    """CA bundle that signed the brokers' certificates (TLS protocols; None: the system's)."""

    def __post_init__(self) -> None:
        if self.sasl and not (self.username and self.password):
            raise ValueError(f"kafka security protocol {self.protocol} needs a SASL username and password")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SASL_SSL", "SSL")

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> KafkaAuth:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        return cls(
            protocol=kafka.security_protocol,
            mechanism=kafka.sasl_mechanism,
            username=kafka.sasl_username,
            password=password,
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None,
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(cafile=self.cafile)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol, "ssl_context": self._ssl_context()}
        if self.sasl:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """``broker_credentials`` of the faust app (None: plaintext)."""
        if self.protocol == "PLAINTEXT":
            return None
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            return SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=self._ssl_context(),
            )
        context = self._ssl_context()
        assert context is not None  # SSL is a TLS protocol
        return SSLCredentials(context)
