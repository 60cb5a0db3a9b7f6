"""The prompt tier and the quality tooling around every guard.

``datasets`` reads the public safety sets with the train/evaluation split enforced in code,
``prefilter`` is the embedding classifier (a sentence-transformers encoder plus a trained head),
``train_prefilter`` reproduces the shipped head, ``evaluation`` scores any ``GuardBackend`` on the
evaluation-only sets and ``report`` turns the result into tables, JSON and plots.
"""
