"""Public safety datasets as uniform ``Record``s, with the train/evaluation split enforced.

Use ``registry.load(name, Purpose.TRAIN | Purpose.EVAL, root)`` for one dataset,
``corpus.training_corpus(root)`` for everything that may be trained on (deduped against every
evaluation split) and ``corpus.evaluation_sets(root)`` for the evaluation-only sets.
"""
