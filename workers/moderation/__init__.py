"""Moderation of conversations, independent of Kafka: lanes, the moderator, emitted events."""
