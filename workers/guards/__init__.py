"""The training and evaluation toolkit of every guard.

``datasets`` reads the public safety sets with the train/evaluation split enforced in code,
``train_prefilter`` (with ``finetune``) reproduces the shipped prefilter head, ``stream_heads``
the shipped stream heads, ``evaluation`` scores any ``GuardBackend`` on the evaluation-only sets
and ``report`` turns the result into tables, JSON and plots.

What serving needs of a trained model (the prefilter's encoder, adapter, head and meta, the
taxonomy, the stream heads' checkpoint formats and backbone) lives in ``workers.backends``; this
toolkit builds on those modules and the runtime never imports this package
(``tests/unit/test_import_boundaries.py``).
"""
