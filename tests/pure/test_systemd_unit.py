"""``voicecall systemd-unit``'s pure renderer: directives, quoting, hostile paths, and the
documented unit in docs/ (it is the renderer's output). The command itself: tests/e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall_trio.cli.systemd_unit import Unit, quote, render_unit
from voicecall_trio.errors import Failed

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE = Unit(executable=("/opt/voicecall-trio/.venv/bin/voicecall",),
               config="/etc/voicecall/config.toml", user="voicecall", group="voicecall",
               store="/var/lib/voicecall", socket="/run/voicecall/voicecall.sock")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_has_notify_watchdog_restart_and_the_hardening() -> None:
    d = directives(render_unit(EXAMPLE))
    expected = {
        "Type": "notify", "WatchdogSec": "30", "Restart": "on-failure",
        "RuntimeDirectory": "voicecall", "StateDirectory": "voicecall",
        "NoNewPrivileges": "true", "ProtectSystem": "strict", "ProtectHome": "read-only",
        "PrivateTmp": "true", "ReadWritePaths": "/var/lib/voicecall", "LimitNOFILE": "1024",
        "User": "voicecall", "Group": "voicecall", "ExecReload": "/bin/kill -HUP $MAINPID",
        "ExecStart": "/opt/voicecall-trio/.venv/bin/voicecall serve --config "
                     "/etc/voicecall/config.toml",
    }
    for key, value in expected.items():
        assert d[key] == [value], key
    assert all(len(values) == 1 for values in d.values())


def test_docs_unit_is_what_the_command_prints_for_the_documented_layout() -> None:
    assert (ROOT / "docs" / "voicecall.service").read_text() == render_unit(EXAMPLE)


def test_stop_timeout_follows_the_graceful_shutdown_and_log_format_goes_to_execstart() -> None:
    text = render_unit(Unit(**{**EXAMPLE.__dict__, "grace_s": 12.5, "log_format": "json"}))
    d = directives(text)
    assert d["TimeoutStopSec"] == ["28"]
    assert d["ExecStart"][0].endswith("--log-format json")


def test_a_socket_outside_store_and_runtime_directory_is_made_writable_and_explained() -> None:
    text = render_unit(Unit(**{**EXAMPLE.__dict__, "store": "/home/ann/vc",
                               "socket": "/home/ann/run/vc.sock"}))
    assert directives(text)["ReadWritePaths"] == ["/home/ann/vc /home/ann/run"]
    assert 'control.socketPath = "/run/voicecall/voicecall.sock"' in text
    assert 'store = "/var/lib/voicecall"' in text
    inside = render_unit(Unit(**{**EXAMPLE.__dict__, "store": "/home/ann/vc",
                                 "socket": "/home/ann/vc/voicecall.sock"}))
    assert directives(inside)["ReadWritePaths"] == ["/home/ann/vc"]


def test_specifiers_variables_and_spaces_are_taken_literally() -> None:
    assert quote("/a/b") == "/a/b"
    assert quote("/a b/100%$HOME") == '"/a b/100%%$$HOME"'
    assert quote('/x"y\\z') == '"/x\\"y\\\\z"'
    text = render_unit(Unit(**{**EXAMPLE.__dict__, "config": "/etc/vc 1/%i.toml"}))
    assert directives(text)["ExecStart"][0].endswith('--config "/etc/vc 1/%%i.toml"')


@pytest.mark.parametrize(("field", "value"), [
    ("config", "/etc/voicecall/x.toml\nExecStartPre=/bin/sh -c evil"),
    ("store", "/var/lib/vc\rUser=root"),
    ("socket", "relative/voicecall.sock"),
    ("config", "etc/config.toml"),
    ("user", "ann\nUser=root"),
    ("group", ""),
])
def test_a_path_or_name_that_would_inject_a_directive_is_refused(field: str, value: str) -> None:
    with pytest.raises(Failed):
        render_unit(Unit(**{**EXAMPLE.__dict__, field: value}))
