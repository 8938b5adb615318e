"""Fuzz target: the JSON-RPC server, every method, against a supervisor on the mock carrier.

Each example writes a few lines on one connection (``RpcServer.handle_stream`` over memory
streams): requests for every method of ``build_methods`` with plausible and wrong params (wrong
types, text with lone surrogates, huge and non-finite numbers, deep nesting), ids of every JSON
type, batches (arrays), garbage bytes, and raw encodings a JSON encoder would never produce.
Half the examples first place a call, so params can name a live call (``$CALL``). Then a
``daemon.health`` probe on the same connection, then end of input.

Asserted for every example: every reply is UTF-8 JSON, none is -32603, the probe answers ok,
and the connection finishes its work and closes (a hang is bounded in real seconds, because
the run uses the autojump clock, on which a virtual deadline would fire during journal writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st
from rigs import rig
from rpc_kit import RawPeer, real_deadline

from voicecall_trio.rpc.methods import build_methods
from voicecall_trio.rpc.protocol import INTERNAL_ERROR
from voicecall_trio.rpc.server import RpcServer

FIELDS = {  # the params each method reads; others get the same fields to see them refused
    "voicecall.initiate": ["message", "to", "mode"],
    "voicecall.continue": ["callId", "message"],
    "voicecall.speak": ["callId", "message"],
    "voicecall.end": ["callId"],
    "voicecall.status": ["callId"],
    "voicecall.subscribe": [],
    "voicecall.simulateInbound": ["from", "to"],
    "daemon.health": [],
    "agent.register": [],
}
METHODS = sorted(FIELDS)
CALL = "$CALL"  # replaced by the id of the call placed before the lines are sent

# any code point, lone surrogates included (st.text() leaves them out by default)
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
numbers = st.one_of(st.integers(), st.integers(min_value=10**18, max_value=10**40),
                    st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(any_text, kids, max_size=3), max_leaves=12)
plausible = {
    "callId": st.sampled_from([CALL, CALL, CALL, "nope", ""]),
    "message": st.sampled_from(["Hello", "Hi \ud83d", "\udc00", "x\ud800y", " "]) | any_text,
    "to": st.sampled_from(["+15555550123", "+15555550124", "12345", "+1555\udc00"]),
    "mode": st.sampled_from(["notify", "conversation", "shout"]),
    "from": st.sampled_from(["+15555550123", "anonymous", ""]),
}
odd_ids = st.one_of(st.integers(min_value=10**30), any_text, st.none(), st.booleans(),
                    st.floats(), st.lists(st.integers(), max_size=2), st.just({"id": 1}))


@st.composite
def method_params(draw: st.DrawFn, method: str) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)  # often not an object at all
    if kind == 1:
        return draw(st.dictionaries(any_text, json_values, max_size=3))
    fields = FIELDS.get(method) or draw(st.sampled_from(list(FIELDS.values())))
    out: dict[str, Any] = {}
    for field in fields:
        if draw(st.integers(0, 4)):  # mostly present, mostly plausible
            out[field] = draw(plausible[field] if draw(st.integers(0, 3)) else json_values)
    return out


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed requests (so the methods themselves are reached), some not."""
    obj: dict[str, Any] = {"jsonrpc": "2.0" if draw(st.integers(0, 9)) else
                           draw(st.sampled_from(["1.0", 2, None]))}
    if draw(st.integers(0, 5)):
        obj["id"] = draw(st.integers(-5, 10**6) if draw(st.integers(0, 3)) else odd_ids)
    method = draw(st.sampled_from(METHODS)) if draw(st.integers(0, 5)) else draw(any_text)
    obj["method"] = method if draw(st.integers(0, 9)) else draw(json_values)
    if draw(st.integers(0, 5)):
        obj["params"] = draw(method_params(method))
    if not draw(st.integers(0, 9)):
        del obj["method"]
        obj["result" if draw(st.booleans()) else "error"] = draw(json_values)
    return obj


def encode(obj: Any, ascii_only: bool) -> bytes:
    # ascii_only=False writes lone surrogates as raw (invalid) UTF-8 bytes instead of escapes
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        return encode(draw(requests()), draw(st.booleans()))
    if kind == 6:  # a batch
        return encode(draw(st.lists(requests(), max_size=3)), True)
    if kind == 7:  # deep nesting, as an array or inside params
        depth = draw(st.sampled_from([10, 1000, 50_000]))
        if draw(st.booleans()):
            return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
        return (b'{"jsonrpc":"2.0","id":1,"method":"voicecall.speak","params":{"message":'
                + b"[" * depth + b"1" + b"]" * depth + b"}}")
    if kind == 8:  # a number no parser should have to hold
        digits = draw(st.sampled_from([b"9" * 5000, b"1e999999", b"-1e-999999", b"NaN"]))
        return b'{"jsonrpc":"2.0","id":' + digits + b',"method":"daemon.health"}'
    return draw(st.binary(max_size=200))


SPEAK_CUT_EMOJI = (b'{"jsonrpc":"2.0","id":1,"method":"voicecall.speak",'
                   b'"params":{"callId":"$CALL","message":"Hi \\ud83d"}}')
STATUS = b'{"jsonrpc":"2.0","id":2,"method":"voicecall.status"}'


@given(sent=st.lists(lines(), min_size=1, max_size=5), with_call=st.booleans())
@example(sent=[SPEAK_CUT_EMOJI, STATUS], with_call=True)  # issue 8, item 5, as reported
def test_fuzz_rpc_server(tmp_path: Path, sent: list[bytes], with_call: bool) -> None:
    trio.run(_run_example, tmp_path, sent, with_call,
             clock=trio.testing.MockClock(autojump_threshold=0))


async def _run_example(tmp_path: Path, example: list[bytes], with_call: bool) -> None:
    with real_deadline(20):
        async with rig(tmp_path, maxConcurrentCalls=2, mock={"speakMsPerChar": 1}) as r:
            methods = build_methods(r.sup)
            assert sorted(methods) == sorted(METHODS)  # a new method must be fuzzed too
            call_id = "none"
            if with_call:
                record = await r.sup.initiate("+15555550123", "Hello", "conversation")
                call_id = record.call_id
                await r.sup.live[call_id].wait_until(lambda rec: rec.state.connected)
            server = RpcServer(methods)
            client_end, server_end = trio.testing.memory_stream_pair()
            peer = RawPeer(client_end)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.handle_stream, server_end)
                for line in example:
                    await client_end.send_all(line.replace(CALL.encode(), call_id.encode())
                                              + b"\n")
                probe = await peer.call("probe", "daemon.health")
                assert probe["result"]["ok"] is True
                await client_end.send_eof()
                while (message := await peer.receive()) is not None:  # until it closes
                    peer.others.append(message)
            for message in peer.others:
                error = message.get("error")
                assert not (isinstance(error, dict) and error.get("code") == INTERNAL_ERROR), \
                    (example, message)
            assert server.in_flight == 0 and server.connections == 0
