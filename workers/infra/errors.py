"""Errors of the local infrastructure (``streamwarden infra``, ``LocalKafka``, ``LocalRedis``).

::

    InfraError
    ├── MissingProgram     a required program (java, mvn, redis-server) is not installed
    ├── FetchError         Maven could not fetch the Kafka broker jars
    ├── StartupError       a service did not become ready (the message carries its log tail)
    ├── NotRunning         an operation needs a service or node that is not running
    └── TopicError         a topic could not be created
        └── TopicMismatch  a topic exists with another partition count or replication factor
"""

from __future__ import annotations


class InfraError(RuntimeError):
    """Local infrastructure could not be prepared, started, inspected or stopped."""


class MissingProgram(InfraError):
    """A program the infrastructure needs is not on PATH; the message names the fix."""


class FetchError(InfraError):
    """The Kafka broker jars could not be fetched from Maven Central."""


class StartupError(InfraError):
    """A service did not become ready before its deadline, or exited while starting."""


class NotRunning(InfraError):
    """The service or node an operation needs is not running."""


class TopicError(InfraError):
    """A topic could not be created or checked."""


class TopicMismatch(TopicError):
    """A topic already exists with a partition count or replication factor other than the one asked for."""
