"""The daemon's JSON-RPC methods, bound to the call supervisor.

Params are checked with msgspec Structs (camelCase, as in the seed); a missing or mistyped
param is -32602 naming the field. Results have the seed's shapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import trio

from ..errors import InvalidInput, RpcError
from ..events import MAX_TEXT_CHARS
from ..health import health_report
from ..model import record_to_builtins
from ..providers import InboundDecision
from ..replies import AgentReply, Responder
from ..supervisor import Supervisor
from .protocol import INVALID_PARAMS
from .server import Connection, Handler

log = logging.getLogger("voicecall.rpc")

P = TypeVar("P")


# What the bot may be asked to say at once, as long as one transcript line may be: a
# million-character message would be accepted, then make every status reply too big to send.
Message = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]


class InitiateParams(msgspec.Struct, rename="camel"):
    message: Message
    to: str | None = None
    mode: Literal["notify", "conversation"] | None = None


class CallMessageParams(msgspec.Struct, rename="camel"):
    call_id: str
    message: Message


class CallIdParams(msgspec.Struct, rename="camel"):
    call_id: str


class StatusParams(msgspec.Struct, rename="camel"):
    call_id: str | None = None


class InboundParams(msgspec.Struct, rename="camel"):
    from_: str = msgspec.field(name="from")
    to: str | None = None


class NoParams(msgspec.Struct):
    pass


def _params(params: dict[str, Any], kind: type[P]) -> P:
    try:
        return msgspec.convert(params, kind)
    except msgspec.ValidationError as exc:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {exc}") from None


def build_methods(
    supervisor: Supervisor,
    *,
    health: Callable[[], dict[str, Any]] | None = None,
    simulate_inbound: Callable[[str, str | None], Awaitable[Any]] | None = None,
) -> dict[str, Handler]:
    """``health`` builds the ``daemon.health`` result (the daemon's ``health_report``); by
    default, the report of a bare supervisor (no public URL, no HTTP addresses)."""
    started = time.monotonic()
    report = health or (lambda: health_report(supervisor, started=started, public_url=None))

    async def initiate(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, InitiateParams)
        record = await supervisor.initiate(p.to, p.message, p.mode)
        return {"callId": record.call_id, "initiated": True}

    async def continue_(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, CallMessageParams)
        text = await supervisor.continue_call(p.call_id, p.message)
        return {"success": True, "transcript": text}

    async def speak(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, CallMessageParams)
        await supervisor.speak(p.call_id, p.message)
        return {"success": True}

    async def end(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, CallIdParams)
        await supervisor.end(p.call_id)
        return {"success": True}

    async def status(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, StatusParams)
        if p.call_id is None:
            return _call_list(supervisor.list_calls(), supervisor.active_count)
        record = await supervisor.lookup(p.call_id)
        if record is None:
            return {"found": False}
        return {"found": True, "call": record_to_builtins(record)}

    async def subscribe(params: dict[str, Any], conn: Connection) -> Any:
        _params(params, NoParams)
        if not conn.subscribed:  # subscribing again changes nothing
            conn.subscribed = True
            receive = supervisor.subscribe()
            conn.nursery.start_soon(_forward_events, supervisor, receive, conn)
        return {"subscribed": True}

    async def health_(params: dict[str, Any], conn: Connection) -> Any:
        return report()

    async def inbound(params: dict[str, Any], conn: Connection) -> Any:
        p = _params(params, InboundParams)
        if simulate_inbound is None:
            raise InvalidInput("simulateInbound works only with the mock provider")
        outcome = await simulate_inbound(p.from_, p.to)
        accepted = outcome.decision is InboundDecision.ACCEPT
        result: dict[str, Any] = {"accepted": accepted}
        if accepted and outcome.record is not None:
            result["callId"] = outcome.record.call_id
        return result

    agents: dict[Connection, Responder] = {}

    async def register(params: dict[str, Any], conn: Connection) -> Any:
        """This connection answers callers from now on (agent.respond requests)."""
        _params(params, NoParams)
        known = agents.get(conn)
        if known is not None:  # registering again: the latest agent again, no new watcher
            agents[conn] = agents.pop(conn)  # ...and the last to fall back to
            supervisor.set_responder(known)
            return {"registered": True}

        async def respond(request: dict[str, Any]) -> AgentReply | None:
            result = await conn.request("agent.respond", request)
            end_call = False
            if isinstance(result, dict):
                end_call = result.get("endCall") is True
                result = result.get("text")
            if not isinstance(result, str):
                return AgentReply(None, end_call) if end_call else None
            if len(result) > MAX_TEXT_CHARS:
                log.warning("agent reply of %d characters cut to %d", len(result),
                            MAX_TEXT_CHARS)
                result = result[:MAX_TEXT_CHARS]
            return AgentReply(result, end_call)

        agents[conn] = respond
        supervisor.set_responder(respond)
        log.info("agent registered: replies now come from the gateway")

        async def watch() -> None:
            try:
                await conn.closed.wait()
            finally:
                agents.pop(conn, None)
                if supervisor.responder is respond:
                    # the newest agent still connected answers from now on, if any is
                    newest = next(reversed(agents.values()), None)
                    supervisor.set_responder(newest)
                    if newest is None:
                        log.info("agent connection closed: no agent registered")
                    else:
                        log.info("agent connection closed: an earlier registered agent "
                                 "answers again")

        conn.nursery.start_soon(watch)
        return {"registered": True}

    return {
        "voicecall.initiate": initiate,
        "voicecall.continue": continue_,
        "voicecall.speak": speak,
        "voicecall.end": end,
        "voicecall.status": status,
        "voicecall.subscribe": subscribe,
        "voicecall.simulateInbound": inbound,
        "daemon.health": health_,
        "agent.register": register,
    }


# The list form of status must fit one reply line (1 MiB) with room to spare: with hundreds
# of long calls in memory it would not, and a client cannot read a longer line.
LIST_BUDGET_BYTES = 768 * 1024


def _call_list(records: list[Any], active: int) -> dict[str, Any]:
    """``{calls}``: the active calls, then as many of the most recent ended ones as fit the
    budget, in their order; ``omitted`` counts the ended calls left out (each is still
    found by ``callId``)."""
    sizes = [len(msgspec.json.encode(record)) for record in records]
    kept = set(range(active))
    budget = LIST_BUDGET_BYTES - sum(sizes[:active])
    for index in range(len(records) - 1, active - 1, -1):  # newest ended first
        if sizes[index] > budget:
            break
        budget -= sizes[index]
        kept.add(index)
    result: dict[str, Any] = {"calls": [record_to_builtins(records[i])
                                        for i in range(len(records)) if i in kept]}
    if len(kept) < len(records):
        result["omitted"] = len(records) - len(kept)
    return result


async def _forward_events(
    supervisor: Supervisor,
    receive: trio.MemoryReceiveChannel[dict[str, Any]],
    conn: Connection,
) -> None:
    try:
        async with receive:
            async for payload in receive:
                await conn.notify("voicecall.event", payload)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        supervisor.unsubscribe(receive)
