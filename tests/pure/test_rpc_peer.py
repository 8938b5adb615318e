"""The sans-IO JSON-RPC peer (pure: bytes and messages in, actions out, no event loop).

The peer keeps the books the daemon's connections, the trio client and the blocking client
share: ids, pending requests and their waiters, and what each incoming line asks for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.rpc.peer import MAX_EXPECTED_REFUSALS, Peer, Refuse, Reply, Unmatched
from voicecall_trio.rpc.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Notification,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_result,
)

SMALL = 128  # a line limit small enough that a test can write a line over it
NULL_ERROR = encode_error(None, INVALID_REQUEST, "Invalid Request: line exceeds 1 MiB")
BIG = {"text": "x" * (2 * SMALL)}


def actions(peer: Peer[Any], *lines: bytes) -> list[Any]:
    return peer.receive_data(b"".join(lines))


# -- ids and pending requests ------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "expected"), [
    (None, [1, 2, 3]),
    ("daemon-", ["daemon-1", "daemon-2", "daemon-3"]),
    ("", ["1", "2", "3"]),
])
def test_ids_are_issued_in_order(prefix: str | None, expected: list[Any]) -> None:
    peer = Peer[str](id_prefix=prefix)
    ids = [peer.send_request("m", {}, f"w{i}")[0] for i in range(3)]
    assert ids == expected and peer.pending == 3


@pytest.mark.parametrize("params", [None, {}, {"a": 1}, {"message": "😀 é"}])
def test_a_request_line_is_what_the_other_end_parses(params: dict[str, Any] | None) -> None:
    client, server = Peer[str](), Peer[str]()
    msg_id, line = client.send_request("voicecall.status", params, "waiter")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert actions(server, line) == [Request(msg_id, "voicecall.status", params or {})]


@pytest.mark.parametrize("result", [None, 0, "ok", [1, "two"], {"found": False},
                                    {"text": "😀"}])
def test_a_round_trip_between_two_peers_reaches_the_waiter(result: Any) -> None:
    client, server = Peer[str](), Peer[str](id_prefix="daemon-")
    msg_id, line = client.send_request("m", {}, "waiter")
    [request] = actions(server, line)
    assert isinstance(request, Request)
    [reply] = actions(client, server.send_result(request.id, result))
    assert reply == Reply(msg_id, "waiter", Response(msg_id, result, None))
    assert client.pending == 0


def test_an_error_reply_reaches_its_waiter_with_the_error() -> None:
    peer = Peer[str]()
    msg_id, _ = peer.send_request("m", {}, "w")
    [reply] = actions(peer, encode_error(msg_id, -32001, "Call not found"))
    assert isinstance(reply, Reply) and reply.waiter == "w"
    assert reply.response.error == {"code": -32001, "message": "Call not found"}


@pytest.mark.parametrize("order", [(1, 2, 3), (3, 1, 2), (2, 3, 1)])
def test_replies_out_of_order_each_find_their_waiter(order: tuple[int, ...]) -> None:
    peer = Peer[str]()
    for n in (1, 2, 3):
        peer.send_request("m", {}, f"w{n}")
    got = actions(peer, *(encode_result(n, n * 10) for n in order))
    assert [(a.waiter, a.response.result) for a in got] == [(f"w{n}", n * 10) for n in order]


@pytest.mark.parametrize("how", ["forgotten", "answered twice", "never asked", "string id"])
def test_a_reply_no_one_waits_for_is_unmatched(how: str) -> None:
    peer = Peer[str]()
    msg_id, _ = peer.send_request("m", {}, "w")
    lines = {
        "forgotten": [encode_result(msg_id, 1)],
        "answered twice": [encode_result(msg_id, 1), encode_result(msg_id, 2)],
        "never asked": [encode_result(99, 1)],
        "string id": [encode_result("1", 1)],  # 1 and "1" are different ids
    }[how]
    if how == "forgotten":
        peer.forget(msg_id)
    got = actions(peer, *lines)
    assert isinstance(got[-1], Unmatched)
    assert peer.pending == (1 if how in ("never asked", "string id") else 0)


def test_a_request_with_invalid_text_is_refused_and_records_nothing() -> None:
    peer = Peer[str]()
    with pytest.raises(RpcError) as caught:
        peer.send_request("voicecall.speak", {"message": "cut \ud83d"}, "w")
    assert caught.value.code == INVALID_PARAMS and "`message`" in caught.value.message
    assert peer.pending == 0


def test_close_hands_back_every_waiter_once() -> None:
    peer = Peer[str]()
    for n in range(3):
        peer.send_request("m", {}, f"w{n}")
    peer.forget(2)
    assert peer.close() == ["w0", "w2"]
    assert peer.close() == [] and peer.pending == 0


# -- what each incoming line asks for -----------------------------------------------------

@pytest.mark.parametrize(("line", "kind", "code"), [
    (b'{"jsonrpc":"2.0","id":7,"method":"agent.respond","params":{"a":1}}', Request, None),
    (b'{"jsonrpc":"2.0","id":"x","method":"m"}', Request, None),
    (b'{"jsonrpc":"2.0","method":"voicecall.event","params":{"type":"t"}}', Notification,
     None),
    (b'{"jsonrpc":"2.0","id":5,"result":1}', Unmatched, None),
    (b"garbage", Refuse, PARSE_ERROR),
    (b"\xff\xfe", Refuse, PARSE_ERROR),
    (b"[1]", Refuse, INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":null,"method":"m"}', Refuse, INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}', Refuse, INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"error":"bad"}', Refuse, INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"t":"\\ud800"}}', Refuse,
     INVALID_PARAMS),
])
def test_each_line_becomes_one_action(line: bytes, kind: type, code: int | None) -> None:
    [action] = actions(Peer[str](), line + b"\n")
    assert isinstance(action, kind)
    if isinstance(action, Refuse):
        assert action.error.code == code and not action.too_long
        reply = json.loads(action.error.reply())
        assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
def test_actions_do_not_depend_on_how_the_bytes_are_cut(chunk: int) -> None:
    stream = (b'{"jsonrpc":"2.0","id":1,"result":"a"}\n'
              b'{"jsonrpc":"2.0","method":"n"}\n\n'
              b'garbage\n'
              b'{"jsonrpc":"2.0","id":3,"method":"m"}\n')
    peer = Peer[str]()
    peer.send_request("m", {}, "w")
    got: list[Any] = []
    for start in range(0, len(stream), chunk):
        got += peer.receive_data(stream[start:start + chunk])
    assert [type(a) for a in got] == [Reply, Notification, Refuse, Request]


@pytest.mark.parametrize("newline", [True, False])
def test_a_line_over_the_limit_is_refused_once_and_reading_goes_on(newline: bool) -> None:
    peer = Peer[str](max_line=SMALL)
    got = actions(peer, b"x" * (SMALL + 1) + (b"\n" if newline else b""))
    assert got == [Refuse(got[0].error, too_long=True)]
    assert got[0].error.id is None and got[0].error.code == INVALID_REQUEST
    assert "exceeds" in json.loads(got[0].error.reply())["error"]["message"]
    rest = actions(peer, b"tail of it\n" if not newline else b"",
                   b'{"jsonrpc":"2.0","method":"n"}\n')
    assert rest == [Notification("n", {})]


def test_next_action_hands_out_one_line_at_a_time() -> None:
    peer = Peer[str]()
    assert peer.next_action() is None
    peer.feed(b'{"jsonrpc":"2.0","method":"a"}\n{"jsonrpc":"2.0","method":"b"}\n{"jsonr')
    assert peer.next_action() == Notification("a", {})
    assert peer.next_action() == Notification("b", {})
    assert peer.next_action() is None
    peer.feed(b'pc":"2.0","method":"c"}\n')
    assert peer.next_action() == Notification("c", {})


# -- error replies with a null id -----------------------------------------------------------

def _run(script: list[tuple[str, Any]]) -> list[Any]:
    """Drive a peer (line limit ``SMALL``) through ``script``: ``request`` (name, big?),
    ``result`` (big?), ``forget`` (name), ``null`` (a null-id error arrives). What each
    ``null`` reached: a waiter's name, a list of them, or None (no one)."""
    peer = Peer[str](max_line=SMALL)
    ids: dict[str, int | str] = {}
    seen: list[Any] = []
    for step, arg in script:
        if step == "request":
            name, big = arg
            ids[name], _ = peer.send_request("m", BIG if big else {}, name)
        elif step == "result":
            peer.send_result(1, BIG if arg else "ok")
        elif step == "forget":
            peer.forget(ids[arg])
        elif step == "null":
            got = actions(peer, NULL_ERROR)
            assert all(isinstance(a, Reply | Unmatched) for a in got)
            names = [a.waiter for a in got if isinstance(a, Reply)]
            assert all(a.response.id is None for a in got)
            seen.append(None if not names else names[0] if len(names) == 1 else names)
    return seen


@pytest.mark.parametrize(("script", "reached"), [
    # the one pending request: whatever the line, it is its answer (the blocking client)
    ([("request", ("a", False)), ("null", None)], ["a"]),
    ([("request", ("a", True)), ("null", None)], ["a"]),
    # nothing pending: no one
    ([("null", None)], [None]),
    ([("request", ("a", False)), ("forget", "a"), ("null", None)], [None]),
    # the request over the limit among several, however many are pending
    ([("request", ("a", False)), ("request", ("b", True)), ("request", ("c", False)),
      ("null", None)], ["b"]),
    # two over the limit: the oldest first
    ([("request", ("a", True)), ("request", ("b", True)), ("null", None), ("null", None)],
     ["a", "b"]),
    # a reply of ours over the limit was refused: no request gets that refusal
    ([("request", ("a", False)), ("result", True), ("null", None)], [None]),
    ([("result", True), ("request", ("a", True)), ("null", None), ("null", None)],
     [None, "a"]),
    # a request over the limit, given up: its refusal reaches no one else
    ([("request", ("a", True)), ("request", ("b", False)), ("forget", "a"),
      ("null", None)], [None]),
    # a reply of ours within the limit is not expected to be refused
    ([("result", False), ("request", ("a", False)), ("null", None)], ["a"]),
    # unforeseen, with several pending: every one of them gets it, in order
    ([("request", ("a", False)), ("request", ("b", False)), ("request", ("c", False)),
      ("null", None)], [["a", "b", "c"]]),
    ([("request", ("a", False)), ("request", ("b", False)), ("forget", "a"),
      ("null", None), ("null", None)], ["b", None]),
])
def test_a_null_id_reply_reaches_the_request_it_answers(
        script: list[tuple[str, Any]], reached: list[Any]) -> None:
    assert _run(script) == reached


def test_a_null_id_reply_keeps_its_error_for_the_waiter() -> None:
    peer = Peer[str]()
    msg_id, _ = peer.send_request("m", {}, "w")
    [reply] = actions(peer, NULL_ERROR)
    assert reply == Reply(msg_id, "w", Response(None, None, json.loads(NULL_ERROR)["error"]))


def test_replies_decided_for_several_waiters_follow_each_other_and_close_hands_them_back(
) -> None:
    peer = Peer[str]()
    for name in "abcd":
        peer.send_request("m", {}, name)
    peer.feed(NULL_ERROR)
    first = peer.next_action()
    assert isinstance(first, Reply) and first.waiter == "a"
    peer.forget(2)  # "b" gave up before its turn: it is not handed out
    second = peer.next_action()
    assert isinstance(second, Reply) and second.waiter == "c"
    assert peer.close() == ["d"]
    assert peer.next_action() is None


def test_expected_refusals_are_bounded() -> None:
    peer = Peer[str](max_line=SMALL)
    for _ in range(MAX_EXPECTED_REFUSALS + 10):
        peer.send_result(1, BIG)  # a peer that never answers lines over its limit
    assert len(peer._refusals) == MAX_EXPECTED_REFUSALS


# -- a property: every waiter is answered at most once, and none is lost --------------------

STEPS = st.lists(st.one_of(
    st.tuples(st.just("request"), st.booleans()),  # over the limit?
    st.tuples(st.just("forget"), st.integers(0, 7)),
    st.tuples(st.just("reply"), st.integers(0, 7)),  # the k-th id issued (maybe twice)
    st.tuples(st.just("stray"), st.sampled_from([
        NULL_ERROR, b"garbage\n", b'{"jsonrpc":"2.0","method":"n"}\n',
        b'{"jsonrpc":"2.0","id":"zz","result":1}\n', b"x" * (SMALL + 5) + b"\n",
    ])),
), max_size=40)


@given(STEPS, st.integers(1, 50))
def test_every_waiter_gets_at_most_one_reply_and_none_is_lost(
        steps: list[tuple[str, Any]], chunk: int) -> None:
    peer = Peer[str](max_line=SMALL)
    issued: list[int | str] = []
    names: dict[int | str, str] = {}
    forgotten: set[str] = set()
    replied: list[str] = []

    def feed(line: bytes) -> None:
        for start in range(0, len(line), chunk):
            for action in peer.receive_data(line[start:start + chunk]):
                if isinstance(action, Reply):
                    assert action.waiter == names[action.id]
                    assert action.response.id in (action.id, None)
                    assert action.waiter not in forgotten
                    replied.append(action.waiter)

    for step, arg in steps:
        if step == "request":
            msg_id, _ = peer.send_request("m", BIG if arg else {}, f"w{len(issued)}")
            names[msg_id] = f"w{len(issued)}"
            issued.append(msg_id)
        elif step == "forget" and arg < len(issued):
            peer.forget(issued[arg])
            forgotten.add(names[issued[arg]])
        elif step == "reply" and arg < len(issued):
            feed(encode_result(issued[arg], "ok"))
        elif step == "stray":
            feed(arg)
    left = peer.close()
    assert len(replied) == len(set(replied))  # at most one reply each
    assert not set(left) & (set(replied) | forgotten)
    assert set(left) | set(replied) | forgotten == set(names.values())  # none lost
    assert peer.pending == 0 and peer.next_action() is None
