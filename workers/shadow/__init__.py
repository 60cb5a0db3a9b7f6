"""The shadow guard: a second guard judging the live traffic without acting on it.

With ``shadow.enabled`` a worker runs a second guard (``shadow.backend``, ``shadow.checkpoint``,
``shadow.policy``; anything unset is the live guard's) beside the live one, so that a platform can
see what a new checkpoint or policy would do before it switches:

- ``feed``: the live ingest offers every decoded prompt and chunk to a bounded queue without
  awaiting anything; when the queue is full the event is dropped and counted, and the rest of its
  message is skipped (judged without it, its verdicts would be wrong rather than missing);
- ``runtime``: the shadow's own backend (its own scheduler and KV cache), its own conversation
  state in Redis (``shadow.redis_namespace``), its own lanes, and the live ``Moderator`` code;
- ``sink`` and ``publisher``: its verdicts go to ``<prefix>.shadow.verdicts`` with ids and tiers of
  their own; its cut-offs and dead letters are counted and never published;
- ``report``, ``read``, ``render`` and ``commands``: ``streamwarden shadow compare`` joins the live
  and shadow verdicts and reports coverage, agreement, cut-offs and latency.

Shadow verdicts are best effort: the shadow acknowledges nothing, so a record the live worker has
acknowledged is never read again for the shadow. Events queued for the shadow when the worker
stops, crashes or loses their partition are lost (their verdicts are missing, which the report's
coverage shows); a record redelivered to the live worker after a crash is offered again, and the
shadow answers it as a duplicate when its state already holds it.
"""
