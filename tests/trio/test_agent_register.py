"""``agent.register`` from several connections: the newest agent answers, and when it goes
the newest one still connected takes over (not nobody, while an agent is still registered)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from voicecall_trio.rpc.methods import build_methods


class _Sup:
    """The two members ``agent.register`` uses."""

    def __init__(self) -> None:
        self.responder: Any = None

    def set_responder(self, responder: Any) -> None:
        self.responder = responder


class _Conn:
    def __init__(self, nursery: trio.Nursery, name: str) -> None:
        self.nursery = nursery
        self.closed = trio.Event()
        self.name = name

    async def request(self, method: str, params: Any) -> Any:
        return {"text": f"from {self.name}"}


async def answer(sup: _Sup) -> str | None:
    reply = await sup.responder({"callId": "c", "transcript": "hi"})
    return reply.text if reply is not None else None


async def test_the_newest_connected_agent_answers_after_the_newest_one_left() -> None:
    sup = _Sup()
    register = build_methods(sup)["agent.register"]  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        a, b, c = _Conn(nursery, "a"), _Conn(nursery, "b"), _Conn(nursery, "c")
        for conn in (a, b, c):
            assert await register({}, conn) == {"registered": True}
        assert await answer(sup) == "from c"
        c.closed.set()
        await trio.testing.wait_all_tasks_blocked()
        assert await answer(sup) == "from b"
        a.closed.set()  # an older one leaving changes nothing
        await trio.testing.wait_all_tasks_blocked()
        assert await answer(sup) == "from b"
        d = _Conn(nursery, "d")
        for conn in (d, b):  # b registers again: the latest, and the last to fall back to
            await register({}, conn)
        assert await answer(sup) == "from b"
        b.closed.set()
        await trio.testing.wait_all_tasks_blocked()
        assert await answer(sup) == "from d"
        d.closed.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sup.responder is None
        nursery.cancel_scope.cancel()
