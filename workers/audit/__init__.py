"""``streamwarden audit``: what was decided for each message of an archived conversation, and why.

Reads one conversation from the archive ``streamwarden archive`` writes (``read``), and reports,
message by message (``report``): the prompt's verdict and the tier that decided it, the answer's
risk chunk by chunk, the tokens where the debounce fired and their text (``tokens``: the answer
re-tokenised with the guard's tokenizer), the cut-off, and the model, policy and worker behind
each verdict. ``replay`` re-judges the archived prompts and chunks with another guard through the
worker's own moderator, and ``compare`` shows where its verdicts differ. ``render`` prints it all;
``document`` writes it as JSON. The conversation's text is in the archive only when it was written
with its text (the ``archive`` command's default); without it the audit reports verdicts and
cut-offs alone, and cannot replay.
"""

from __future__ import annotations

from workers.audit.read import ArchivedConversation, ConversationNotArchived, read_conversation
from workers.audit.report import ConversationReport, MessageReport, build_report
from workers.audit.run import Audit, NothingToReplay, audit

__all__ = [
    "ArchivedConversation",
    "Audit",
    "ConversationNotArchived",
    "ConversationReport",
    "MessageReport",
    "NothingToReplay",
    "audit",
    "build_report",
    "read_conversation",
]
