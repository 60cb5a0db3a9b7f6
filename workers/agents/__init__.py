"""faust agents: the thin Kafka boundary of the worker (decode, dispatch, publish, acknowledge)."""
