"""``voicecall latency``: per-stage percentiles from the journal's ``metadata.turns``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from voicecall_trio.cli.app import bind
from voicecall_trio.cli.latency import describe_waterfall, latency, waterfall_summary
from voicecall_trio.errors import Failed
from voicecall_trio.testing import running_daemon
from voicecall_trio.testing.chat import FakeChatCompletions, Reply


def record(call_id: str, turns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"callId": call_id, "provider": "mock", "direction": "outbound",
            "state": "listening", "from": "+15550000000", "to": "+15555550123",
            "transcript": [], "metadata": {"mode": "conversation", "turns": turns}}


def write_store(tmp_path: Path, lines: list[Any], rotated: list[Any] = ()) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    (store / "calls.jsonl").write_text("".join(
        (x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    if rotated:
        (store / "calls.jsonl.1").write_text("".join(json.dumps(x) + "\n" for x in rotated))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": str(store)}))
    return config


def turn(n: float, *, audio: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"callerStopped": 0, "finalTranscript": 0.0,
                           "replyRequested": n / 10, "firstToken": n, "firstSentence": n + 1}
    if audio:
        out["firstAudioOut"] = n + 2
    return out


def test_percentiles_per_stage_and_total() -> None:
    summary = waterfall_summary([turn(float(n)) for n in range(1, 101)])
    assert summary["turns"] == 100
    assert set(summary["stages"]) == {"finalTranscript", "replyRequested", "firstToken",
                                      "firstSentence", "firstAudioOut"}  # none reached tts
    assert summary["stages"]["firstToken"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert summary["total"] == {"p50": 52.0, "p90": 92.0, "p99": 101.0}
    assert waterfall_summary([turn(1.0), turn(2.0)])["stages"]["firstToken"] == {
        "p50": 1.0, "p90": 2.0, "p99": 2.0}
    assert "firstToken" in describe_waterfall(summary)


def test_no_turns_and_turns_without_audio() -> None:
    assert waterfall_summary([]) == {"turns": 0, "stages": {}, "total": None}
    assert describe_waterfall(waterfall_summary([])) == "no turns recorded yet"
    summary = waterfall_summary([turn(5.0, audio=False)])
    assert summary["total"] is None and "firstAudioOut" not in summary["stages"]


def test_the_journal_across_rotation_and_one_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = record("a", [turn(1.0)])
    config = write_store(tmp_path, [
        record("a", [turn(10.0), turn(20.0)]),  # the newest line of "a" wins over the old one
        "torn {",
        {"callId": "c", "metadata": {"turns": "not a list"}},
        record("b", [turn(30.0), {"callerStopped": 0, "firstToken": "x", "heard": True}]),
    ], rotated=[old])
    assert latency(json=True, config=str(config)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["turns"] == 4
    assert summary["stages"]["firstToken"]["p99"] == 30.0
    assert "heard" not in summary["stages"]
    assert latency(call_id="a", json=True, config=str(config)) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["turns"] == 2 and one["total"] == {"p50": 12.0, "p90": 22.0, "p99": 22.0}
    with pytest.raises(Failed, match="no call zzz"):
        latency(call_id="zzz", config=str(config))


def test_a_hostile_journal_never_breaks_the_command_or_its_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line nested deeper than the JSON decoder recurses, and figures that are not finite
    (``Infinity``/``NaN``/``1e400``, which Python's json reads), are skipped: the output
    stays strict JSON."""
    config = write_store(tmp_path, [
        "[" * 200_000,
        '{"callId": "x", "metadata": {"turns": [{"callerStopped": 0, "firstToken": Infinity,'
        ' "firstSentence": NaN, "firstAudioOut": 1e400, "heard": 5,'
        ' "replyRequested": 1' + "0" * 400 + '}]}}',
        record("a", [turn(10.0)]),
    ])
    assert latency(json=True, config=str(config)) == 0
    out = capsys.readouterr().out
    summary = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in {out}"))
    assert summary["turns"] == 2
    assert summary["stages"]["firstToken"]["p99"] == 10.0
    assert summary["total"] == {"p50": 12.0, "p90": 12.0, "p99": 12.0}
    assert summary["stages"]["heard"]["p50"] == 5.0


def test_an_unreadable_journal_is_an_error_naming_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "calls.jsonl").mkdir(parents=True)  # a directory where the journal should be
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": str(store)}))
    with pytest.raises(Failed, match=r"cannot read the journal .*calls\.jsonl"):
        latency(config=str(config))
    (tmp_path / "file").write_text("")
    config.write_text(json.dumps({"store": str(tmp_path / "file")}))  # the store is a file
    with pytest.raises(Failed, match="cannot read the journal"):
        latency(config=str(config))


def test_the_command_line(tmp_path: Path) -> None:
    config = write_store(tmp_path, [record("a", [turn(10.0)])])
    assert bind(["latency", "--call-id", "a", "--json"]) is not None
    out = subprocess.run([sys.executable, "-m", "voicecall_trio.cli", "latency", "--call-id",
                          "a", "--json", "--config", str(config)],
                         capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout)["stages"]["firstSentence"]["p50"] == 11.0
    missing = subprocess.run([sys.executable, "-m", "voicecall_trio.cli", "latency",
                              "--call-id", "nope", "--config", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no call nope" in missing.stderr


async def test_the_turns_of_test_calls(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: the daemon journals each turn, and ``latency --json`` reads them."""
    store = tmp_path / "store"
    mock = {"answerDelayMs": 10, "replyDelayMs": 10, "speakMsPerChar": 0,
            "callerScript": ["One.", "Two.", "Three."]}
    async with FakeChatCompletions(default=Reply("Noted, thanks.", token_s=0.002)) as fake, \
            running_daemon({"responseBaseUrl": fake.url, "mock": mock}, store=store) as d:
        ids = []
        for _ in range(2):
            placed = await d.rpc("voicecall.initiate", {
                "to": "+15555550123", "message": "Hi.", "mode": "conversation"})
            call = d.handle.supervisor.live[placed["callId"]]
            with trio.fail_after(15):
                await call.wait_until(lambda r: r.terminal)
            ids.append(placed["callId"])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": str(store)}))
    assert latency(json=True, config=str(config)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["turns"] == 6  # three answered turns per call
    for stage in ("finalTranscript", "replyRequested", "firstToken", "firstSentence",
                  "firstAudioOut", "heard"):
        figures = summary["stages"][stage]
        assert 0 <= figures["p50"] <= figures["p90"] <= figures["p99"]
    assert summary["total"] == summary["stages"]["firstAudioOut"]
    assert latency(call_id=ids[0], json=True, config=str(config)) == 0
    assert json.loads(capsys.readouterr().out)["turns"] == 3


def test_tail_of_an_unreadable_journal_is_an_error_naming_it(tmp_path: Path) -> None:
    from voicecall_trio.cli.journal import tail

    store = tmp_path / "store"
    (store / "calls.jsonl").mkdir(parents=True)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": str(store)}))
    with pytest.raises(Failed, match=r"cannot read the journal .*calls\.jsonl"):
        tail(config=str(config))
