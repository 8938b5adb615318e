"""tunnel/: Tailscale command lines and readings, the plan, backoff, line cutting (pure)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio import tunnel
from voicecall_trio.config import build_config
from voicecall_trio.tunnel import backoff, plan, tailscale
from voicecall_trio.tunnel.lines import LineBuffer

TS = "/usr/bin/tailscale"


@pytest.mark.parametrize(("mode", "expected"), [
    ("funnel", [[TS, "funnel", "--bg", "--yes", "--set-path", "/voice/webhook",
                 "http://127.0.0.1:3334/voice/webhook"]]),
    ("serve", [[TS, "serve", "--bg", "--yes", "--set-path", "/voice/webhook",
                "http://127.0.0.1:3334/voice/webhook"]]),
    ("off", [[TS, "funnel", "--set-path", "/voice/webhook", "off"],
             [TS, "serve", "--set-path", "/voice/webhook", "off"]]),
])
def test_expose_commands(mode: tunnel.TailscaleMode, expected: list[list[str]]) -> None:
    assert tunnel.expose_commands(TS, mode, port=3334, path="/voice/webhook") == expected


def test_status_json_and_off_commands() -> None:
    assert tailscale.status_json_command(TS) == [TS, "status", "--json"]
    assert tailscale.off_command(TS, "funnel", "/hook") == [TS, "funnel", "--set-path", "/hook",
                                                             "off"]


@pytest.mark.parametrize(("mode", "expected"), [
    ("funnel", [TS, "funnel", "status"]), ("off", [TS, "funnel", "status"]),
    ("serve", [TS, "serve", "status"]),
])
def test_status_command_shows_funnel_unless_serve(mode: tunnel.TailscaleMode,
                                                  expected: list[str]) -> None:
    assert tunnel.status_command(TS, mode) == expected


def test_a_failed_step_names_the_command_and_tailscales_words() -> None:
    command = tailscale.up_command(TS, "funnel", port=8080, path="/hook")
    assert tailscale.step_failure("funnel", command, 1, "  funnel not enabled\n  for this\n") == (
        "`tailscale funnel --bg --yes --set-path /hook http://127.0.0.1:8080/hook` failed "
        "(exit 1): funnel not enabled for this")
    assert tailscale.step_failure("funnel", command, 0, "") is None
    assert tailscale.step_failure("off", command, 1, "not serving") is None


def test_clip_bounds_a_subprocess_s_words() -> None:
    assert tailscale.clip("x" * 1000).endswith("...")
    assert len(tailscale.clip("x" * 1000)) == tailscale.MAX_DETAIL


@pytest.mark.parametrize(("output", "expected"), [
    (json.dumps({"Self": {"DNSName": "box.tail1234.ts.net."}}), "box.tail1234.ts.net"),
    (json.dumps({"Self": {"DNSName": "Box.Tail1234.ts.net"}}), "box.tail1234.ts.net"),
    (json.dumps({"Self": {"DNSName": ""}}), None),
    (json.dumps({"Self": {}}), None),
    (json.dumps({"Self": "x"}), None),
    (json.dumps([1, 2]), None),
    ("not json", None),
    (b"\xff\xfe", None),
    (json.dumps({"Self": {"DNSName": "evil.example/@x"}}), None),
    (json.dumps({"Self": {"DNSName": "a b"}}), None),
    (json.dumps({"Self": {"DNSName": "x" * 300}}), None),
    (json.dumps({"Self": {"DNSName": 7}}), None),
    ("[" * 30_000 + "]" * 30_000, None),
])
def test_dns_name(output: str | bytes, expected: str | None) -> None:
    assert tailscale.dns_name(output) == expected


def test_public_url_is_https_on_the_node_name() -> None:
    assert tailscale.public_url("box.ts.net", "/voice/webhook") == \
        "https://box.ts.net/voice/webhook"


def _config(**doc: Any) -> Any:
    return build_config(doc, {})


@pytest.mark.parametrize(("doc", "kind", "key", "mode", "paths"), [
    ({}, "none", "", None, ()),
    ({"publicUrl": "https://x.example/voice/webhook"}, "config", "publicUrl", None, ()),
    ({"tunnel": {"provider": "ngrok"}}, "ngrok", "tunnel.provider", None, ()),
    ({"tunnel": {"provider": "tailscale-funnel"}}, "tailscale", "tunnel.provider", "funnel",
     ("/voice/webhook",)),
    ({"tunnel": {"provider": "tailscale-serve"}, "serve": {"path": "/hook"}}, "tailscale",
     "tunnel.provider", "serve", ("/hook",)),
    ({"tailscale": {"mode": "funnel", "path": "/legacy"}}, "tailscale", "tailscale.mode",
     "funnel", ("/legacy",)),
    ({"tunnel": {"provider": "tailscale-funnel"}, "streaming": {"enabled": True}}, "tailscale",
     "tunnel.provider", "funnel", ("/voice/webhook", "/voice/stream")),
    # tunnel.provider wins over the legacy key
    ({"tunnel": {"provider": "ngrok"}, "tailscale": {"mode": "funnel"}}, "ngrok",
     "tunnel.provider", None, ()),
])
def test_plan(doc: dict[str, Any], kind: str, key: str, mode: str | None,
              paths: tuple[str, ...]) -> None:
    chosen = plan.plan_for(_config(**doc))
    assert (chosen.kind, chosen.key, chosen.mode, chosen.paths) == (kind, key, mode, paths)


def test_public_url_wins_and_says_what_it_overrides() -> None:
    chosen = plan.plan_for(_config(publicUrl="https://x.example", tunnel={"provider": "ngrok"}))
    assert chosen.kind == "config" and chosen.overridden == 'tunnel.provider "ngrok"'
    legacy = plan.plan_for(_config(publicUrl="https://x.example", tailscale={"mode": "serve"}))
    assert legacy.overridden == 'tailscale.mode "serve"'


def test_tailscale_paths_for_expose() -> None:
    assert plan.tailscale_paths(_config()) == ("/voice/webhook",)
    assert plan.tailscale_paths(_config(tailscale={"mode": "serve", "path": "/old"})) == ("/old",)
    assert plan.tailscale_paths(_config(streaming={"enabled": True, "streamPath": "/s"})) == \
        ("/voice/webhook", "/s")


def test_backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() -> None:
    assert [backoff.restart_delay(n) for n in (1, 2, 3, 4, 7, 8, 50)] == \
        [1, 2, 4, 8, 60, 60, 60]
    assert backoff.failures_after(0, 0.5) == 1
    assert backoff.failures_after(3, 2.0) == 4
    assert backoff.failures_after(5, backoff.HEALTHY_S) == 1


def test_line_buffer_splits_across_chunks_and_strips_cr() -> None:
    lines = LineBuffer()
    assert lines.feed(b'{"a"') == []
    assert lines.feed(b': 1}\r\n{"b": 2}\nrest') == [b'{"a": 1}', b'{"b": 2}']
    assert lines.flush() == [b"rest"]
    assert lines.flush() == []


def test_line_buffer_cuts_an_endless_line() -> None:
    lines = LineBuffer(limit=8)
    out = lines.feed(b"x" * 5)
    out += lines.feed(b"y" * 100)
    out += lines.feed(b"z" * 100 + b"\nok\n")
    assert out == [b"xxxxxyyy", b"ok"]
    assert lines.cut == 1
    assert LineBuffer(limit=4).feed(b"123456") == [b"1234"]


def test_tunnel_imports_no_trio() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, voicecall_trio.tunnel, voicecall_trio.tunnel.ngrok, "
         "voicecall_trio.tunnel.plan, voicecall_trio.tunnel.backoff; "
         "print('trio' in sys.modules)"],
        capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "False"


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=1, max_value=30))
def test_line_buffer_matches_split_for_lines_within_the_limit(chunks: list[bytes],
                                                               limit: int) -> None:
    data = b"".join(chunks)
    lines = LineBuffer(limit=limit)
    out = [line for chunk in chunks for line in lines.feed(chunk)] + lines.flush()
    expected = []
    parts = data.split(b"\n")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and not part:
            continue
        if len(part) > limit:
            expected.append(part[:limit])
        else:
            expected.append(part if last else part.rstrip(b"\r"))
    assert out == expected
