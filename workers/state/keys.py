"""Redis key names; nothing else formats keys.

The conversation id sits in a hash tag (``{...}``) so that a conversation's record and its log
share a Redis Cluster slot, which the atomic scripts require.
"""

from __future__ import annotations


def conv_key(namespace: str, conversation_id: str) -> str:
    return f"{namespace}:conv:{{{conversation_id}}}"


def log_key(namespace: str, conversation_id: str) -> str:
    return f"{namespace}:conv:{{{conversation_id}}}:log"


def epoch_key(namespace: str, partition: int) -> str:
    return f"{namespace}:epoch:{partition}"
