"""WorkerRuntime start-up: when a worker may call itself ready."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.fakes import FakeBackend
from workers.app import create_app
from workers.settings import load_settings


class _Store:
    """Stands in for Redis: start-up only pings it."""

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # start-up freezes the heap; give the test process its collector back


@pytest.mark.parametrize("order", [("loaded", "assigned"), ("assigned", "loaded")])
async def test_ready_once_the_model_is_loaded_and_the_partitions_are_assigned(order: tuple[str, str]) -> None:
    _, runtime = create_app(load_settings(), FakeBackend())
    runtime.store = _Store()  # type: ignore[assignment]
    announced: list[str] = []
    runtime.on_ready.append(lambda: announced.append("ready"))

    async def loaded() -> None:
        await runtime.on_start()

    async def assigned() -> None:
        runtime.partitions_assigned(2)

    steps = {"loaded": loaded, "assigned": assigned}
    await steps[order[0]]()
    assert announced == [], f"announced ready after only '{order[0]}'"
    await steps[order[1]]()
    assert announced == ["ready"]
    runtime.partitions_assigned(2)  # a later rebalance
    assert announced == ["ready"]
    assert gc.get_freeze_count() > 0, "the start-up heap was left to the collector"
