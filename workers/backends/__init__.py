"""Guard backends and the factory that builds the configured one.

``make_backend(settings)`` is the only place that maps the ``guard.backend`` setting to a class;
each backend module imports torch (or sentence-transformers) itself, lazily, here.
"""

from __future__ import annotations

from workers.backends.base import GuardBackend
from workers.settings import Settings

BACKENDS = ("stream", "cascade")


def make_backend(settings: Settings) -> GuardBackend:
    """The guard backend named by ``settings.guard.backend``.

    Raises:
        ValueError: the name is not one a worker can run (the prefilter alone judges no responses).
    """
    name = settings.guard.backend
    if name == "stream":
        from workers.backends.stream import StreamBackend

        return StreamBackend(settings)
    if name == "cascade":
        from workers.backends.cascade import CascadeBackend
        from workers.backends.prefilter import PrefilterBackend
        from workers.backends.stream import StreamBackend

        return CascadeBackend(PrefilterBackend(settings), StreamBackend(settings))
    raise ValueError(
        f"guard.backend={name!r} cannot run a worker: the prefilter judges prompts only; choose one of {BACKENDS}"
    )
