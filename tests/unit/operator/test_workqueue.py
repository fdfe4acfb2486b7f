import asyncio

from egpu_operator.workqueue import WorkQueue


def test_a_key_waits_once_however_often_it_is_added() -> None:
    async def scenario() -> list[object]:
        queue = WorkQueue()
        for key in ["a", "b", "a", "a", "b"]:
            queue.add(key)
        assert len(queue) == 2
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == ["a", "b"]


def test_a_key_added_while_processed_comes_back_after_done_not_before() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")  # changed while a worker holds it
        assert len(queue) == 0, "no second worker may take it now"
        queue.done(key)
        assert len(queue) == 1
        assert await queue.get() == "a"
        queue.done("a")
        assert len(queue) == 0

    asyncio.run(scenario())


def test_rate_limited_requeue_doubles_until_forgotten() -> None:
    async def scenario() -> list[float]:
        queue = WorkQueue(base_s=0.01, max_s=0.04)
        delays = [queue.add_rate_limited("a") for _ in range(4)]
        assert await asyncio.wait_for(queue.get(), timeout=1) == "a"  # it does come back
        queue.done("a")
        queue.forget("a")
        delays.append(queue.add_rate_limited("a"))
        return delays

    assert asyncio.run(scenario()) == [0.01, 0.02, 0.04, 0.04, 0.01]
