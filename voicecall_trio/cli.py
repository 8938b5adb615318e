"""The ``voicecall`` command line: thin, and quick to start.

Each command is a plain keyword-only function below; cyclopts builds ``--help``, usage errors
and completion from those functions. Because importing cyclopts alone costs more than the
whole 100 ms start-up budget, well-formed invocations of simple commands are bound directly
from the functions' own signatures (``_fast_bind``) and cyclopts is imported only for help,
errors and anything unusual. Either way the same function runs. Nothing here imports trio,
quart or httpx except ``serve``.

Exit codes: 0 ok, 1 operation failed (message on stderr), 2 usage error, 3 daemon not
reachable (the message names the socket and how to start the daemon).
"""

from __future__ import annotations

import json as _json
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cyclopts resolves these names in _build_app; the fast path never needs them
    from collections.abc import Callable
    from typing import Any, Literal

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
E164_PATTERN = r"^\+[1-9]\d{1,14}$"


class UsageError(Exception):
    pass


class Failed(Exception):
    pass


# -- helpers -------------------------------------------------------------------------------


def _socket_path(socket: str | None, config: str | None) -> str:
    if socket:
        return os.path.expanduser(socket)
    from .configfile import locate

    return locate(config, os.environ)[0]


def _rpc(socket: str | None, config: str | None, method: str,
         params: dict[str, Any] | None = None) -> Any:
    from .rpc.client import SyncClient

    with SyncClient(_socket_path(socket, config)) as client:
        return client.call(method, params or {})


def _emit(result: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        print(_json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


def _check_e164(number: str, what: str = "--to") -> None:
    import re

    if not re.match(E164_PATTERN, number):
        raise Failed(
            f"{what} {number!r} is not an E.164 phone number (a + and up to 15 digits, "
            "like +15555550123)"
        )


def _fmt_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _describe_call(call: dict[str, Any]) -> str:
    lines = [
        f"call      {call.get('callId')}",
        f"state     {call.get('state')}"
        + (f" ({call['endReason']})" if call.get("endReason") else ""),
        f"direction {call.get('direction')}  {call.get('from')} -> {call.get('to')}",
        f"provider  {call.get('provider')} {call.get('providerCallId') or ''}".rstrip(),
        f"started   {_fmt_time(call.get('startedAt'))}"
        f"   answered {_fmt_time(call.get('answeredAt'))}"
        f"   ended {_fmt_time(call.get('endedAt'))}",
    ]
    for entry in call.get("transcript", []):
        who = "bot " if entry.get("speaker") == "bot" else "user"
        lines.append(f"  {who}: {entry.get('text')}")
    return "\n".join(lines)


def _call_row(call: dict[str, Any]) -> str:
    return (f"{call.get('callId')}  {call.get('state'):<11} {call.get('direction'):<8} "
            f"{call.get('to') if call.get('direction') == 'outbound' else call.get('from')}")


# -- commands ------------------------------------------------------------------------------


def serve(*, config: str | None = None, socket: str | None = None) -> int:
    """Run the daemon in the foreground (what systemd starts).

    Parameters
    ----------
    config
        Config file (JSON, JSON5 or TOML); default VOICECALL_CONFIG or
        ~/.config/voicecall/config.{toml,json,json5}.
    socket
        Control socket path (default <store>/voicecall.sock).
    """
    from pathlib import Path

    from .config import load_config
    from .daemon import DaemonStartError, configure_logging, serve_forever

    configure_logging()
    cfg = load_config(config)
    socket_path = Path(os.path.expanduser(socket)) if socket else None
    try:
        serve_forever(cfg, socket_path=socket_path)
    except DaemonStartError as exc:
        raise Failed(exc.message) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def call(*, to: str | None = None, message: str, mode: Literal["notify", "conversation"] | None
         = None, json: bool = False, socket: str | None = None, config: str | None = None) -> int:
    """Place an outbound call.

    Parameters
    ----------
    to
        Number to call, E.164 (default: toNumber from the config).
    message
        What to say when the callee answers.
    mode
        notify (say it and hang up) or conversation (keep the line open).
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    if to is not None:
        _check_e164(to)
    params: dict[str, Any] = {"message": message}
    if to is not None:
        params["to"] = to
    if mode is not None:
        params["mode"] = mode
    result = _rpc(socket, config, "voicecall.initiate", params)
    _emit(result, json, lambda r: f"call placed: {r['callId']}")
    return EXIT_OK


def continue_(*, call_id: str, message: str, json: bool = False, socket: str | None = None,
              config: str | None = None) -> int:
    """Say something and wait for the callee's answer (up to transcriptTimeoutMs).

    Parameters
    ----------
    call_id
        The call's id.
    message
        What to say.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = _rpc(socket, config, "voicecall.continue", {"callId": call_id, "message": message})
    _emit(result, json, lambda r: f"callee: {r.get('transcript')}")
    return EXIT_OK


def speak(*, call_id: str, message: str, json: bool = False, socket: str | None = None,
          config: str | None = None) -> int:
    """Say something on a live call without waiting for an answer.

    Parameters
    ----------
    call_id
        The call's id.
    message
        What to say.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = _rpc(socket, config, "voicecall.speak", {"callId": call_id, "message": message})
    _emit(result, json, lambda r: "ok")
    return EXIT_OK


def end(*, call_id: str, json: bool = False, socket: str | None = None,
        config: str | None = None) -> int:
    """Hang up a call (ending an ended call is fine).

    Parameters
    ----------
    call_id
        The call's id.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = _rpc(socket, config, "voicecall.end", {"callId": call_id})
    _emit(result, json, lambda r: "call ended")
    return EXIT_OK


def status(*, call_id: str | None = None, json: bool = False, socket: str | None = None,
           config: str | None = None) -> int:
    """Show one call, or the active calls and those ended since the daemon started.

    Parameters
    ----------
    call_id
        The call's id; without it, list calls.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    params = {"callId": call_id} if call_id else {}
    result = _rpc(socket, config, "voicecall.status", params)
    if call_id and not result.get("found"):
        if json:
            _emit(result, json, str)
        print(f"error: Call not found: {call_id}", file=sys.stderr)
        return EXIT_FAILED
    if call_id:
        _emit(result, json, lambda r: _describe_call(r["call"]))
    else:
        _emit(result, json, lambda r: "\n".join(_call_row(c) for c in r["calls"]) or "no calls")
    return EXIT_OK


def tail(*, lines: int = 20, follow: bool = False, json: bool = False,
         config: str | None = None) -> int:
    """Print the last lines of calls.jsonl (works while the daemon is down).

    Parameters
    ----------
    lines
        How many lines to print first.
    follow
        Keep printing new lines as they are written (Ctrl-C stops).
    json
        Print the raw JSON lines.
    config
        Config file, used to find the store.
    """
    from pathlib import Path

    from .configfile import locate
    from .journal_tail import tail_lines

    path = Path(locate(config, os.environ)[1])
    for line in tail_lines(path, lines):
        _print_journal_line(line, json)
    if not follow:
        return EXIT_OK
    position = path.stat().st_size if path.exists() else 0
    try:
        while True:
            time.sleep(0.5)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < position:  # rotated
                position = 0
            if size > position:
                with open(path, "rb") as file:
                    file.seek(position)
                    chunk = file.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                position += len(complete)
                for line in complete.splitlines():
                    if line.strip():
                        _print_journal_line(line, json)
    except KeyboardInterrupt:
        return EXIT_OK


def _print_journal_line(line: bytes, as_json: bool) -> None:
    text = line.decode("utf-8", "replace")
    if as_json:
        print(text, flush=True)
        return
    try:
        rec = _json.loads(text)
        last = rec.get("transcript", [])[-1:] or [{}]
        said = f"  {last[0].get('speaker')}: {last[0].get('text')}" if last[0] else ""
        print(f"{_fmt_time(rec.get('endedAt') or rec.get('answeredAt') or rec.get('startedAt'))}"
              f"  {rec.get('callId')}  {rec.get('state')}{said}", flush=True)
    except (ValueError, AttributeError, IndexError):
        print(f"(unreadable line) {text[:120]}", flush=True)


def watch(*, call_id: str | None = None, json: bool = False, socket: str | None = None,
          config: str | None = None) -> int:
    """Print live call events as they happen (Ctrl-C stops).

    Parameters
    ----------
    call_id
        Only this call's events; stop when it ends.
    json
        Print each event as a JSON line.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    from .rpc.client import SyncClient

    with SyncClient(_socket_path(socket, config)) as client:
        client.call("voicecall.subscribe", {})
        if call_id:
            found = client.call("voicecall.status", {"callId": call_id})
            if not found.get("found"):
                raise Failed(f"Call not found: {call_id}")
            if found["call"]["state"] in _TERMINAL:
                _emit(found["call"], json, _describe_call)
                return EXIT_OK
        # subscribed: from here on no event is missed (scripts can wait for this line)
        print(f"watching {call_id or 'all calls'} (Ctrl-C stops)", file=sys.stderr, flush=True)
        try:
            for note in client.notifications():
                event = note.params
                if call_id and event.get("callId") != call_id:
                    continue
                _emit(event, json, _describe_event)
                sys.stdout.flush()
                if call_id and event.get("state") in _TERMINAL:
                    return EXIT_OK
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


_TERMINAL = frozenset({"completed", "hangup-user", "hangup-bot", "timeout", "error", "failed",
                       "no-answer", "busy", "voicemail"})


def _describe_event(event: dict[str, Any]) -> str:
    kind = event.get("type", "")
    head = f"{time.strftime('%H:%M:%S')} {str(event.get('callId'))[:8]} {kind:<15}"
    if kind == "call.speaking" and event.get("text"):
        return f"{head} bot:  {event['text']}"
    if kind == "call.speech":
        return f"{head} user: {event.get('text')}"
    if kind == "call.ended":
        return f"{head} ended: {event.get('reason')}"
    return f"{head} {event.get('state', '')}"


def tool(input: str | None = None, *, schema: bool = False, socket: str | None = None,
         config: str | None = None) -> int:
    """Run one voice_call tool action given as JSON, or print the tool's schema.

    Parameters
    ----------
    input
        The action as JSON, e.g. '{"action": "get_status", "callId": "..."}'; "-" reads stdin.
    schema
        Print the tool's JSON schema and exit.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    from .tool import TOOL_SCHEMA, run_tool

    if schema:
        print(_json.dumps(TOOL_SCHEMA, indent=2))
        return EXIT_OK
    # The tool's contract is JSON on stdout, errors included: agents read nothing else.
    if input is None:
        print(_json.dumps({"error": "tool needs the action as JSON (or --schema)"}))
        return EXIT_USAGE
    text = sys.stdin.read() if input == "-" else input
    try:
        args = _json.loads(text)
    except ValueError as exc:
        print(_json.dumps({"error": f"tool input is not valid JSON: {exc}"}))
        return EXIT_USAGE
    if isinstance(args, dict) and isinstance(args.get("to"), str):
        try:
            _check_e164(args["to"], "to")
        except Failed as exc:
            print(_json.dumps({"error": str(exc)}))
            return EXIT_FAILED
    from .rpc.client import DaemonUnreachable

    unreachable = False

    def call_daemon(method: str, params: dict[str, Any]) -> Any:
        nonlocal unreachable
        try:
            return _rpc(socket, config, method, params)
        except DaemonUnreachable:
            unreachable = True
            raise

    result = run_tool(args, call_daemon)
    print(_json.dumps(result, ensure_ascii=False))
    if unreachable:
        print(f"error: {result.get('error')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_FAILED if "error" in result else EXIT_OK


def simulate_inbound(*, from_: str, to: str | None = None, json: bool = False,
                     socket: str | None = None, config: str | None = None) -> int:
    """Simulate an inbound call on the mock carrier (subject to inboundPolicy).

    Parameters
    ----------
    from_
        The caller's number, E.164.
    to
        The number called (default: fromNumber).
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    params: dict[str, Any] = {"from": from_}
    if to:
        params["to"] = to
    result = _rpc(socket, config, "voicecall.simulateInbound", params)
    if result.get("accepted") or json:
        _emit(result, json, lambda r: f"accepted: {r['callId']}")
    if not result.get("accepted"):
        print("error: the call was refused (inboundPolicy / allowFrom / maxConcurrentCalls)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def expose(*, mode: Literal["funnel", "serve", "off"] = "funnel", config: str | None = None
           ) -> int:
    """Expose the webhook with Tailscale (funnel: public; serve: tailnet only; off: stop).

    Parameters
    ----------
    mode
        funnel makes serve.path reachable from the internet (what Twilio/Telnyx need);
        serve only within your tailnet; off removes it.
    config
        Config file (serve.port, serve.path).
    """
    from . import tunnel
    from .config import load_config

    cfg = load_config(config)
    tailscale = tunnel.find_tailscale()
    if tailscale is None:
        raise Failed(tunnel.NOT_INSTALLED)
    failure = tunnel.apply_tailscale(tailscale, mode, port=cfg.serve.port, path=cfg.serve.path)
    if failure is not None:
        raise Failed(failure)
    if mode == "serve":
        print(tunnel.SERVE_IS_PRIVATE, file=sys.stderr)
    print(tunnel.tailscale_status(tailscale, mode))
    return EXIT_OK


def doctor(*, json: bool = False, socket: str | None = None, config: str | None = None) -> int:
    """Check the config, the socket, the public URL and webhook signature setup.

    Parameters
    ----------
    json
        Print the checks as JSON.
    socket
        Control socket path.
    config
        Config file.
    """
    from .config import load_config
    from .errors import ConfigError
    from .rpc.client import DaemonUnreachable, SyncClient

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    cfg = None
    try:
        cfg = load_config(config)
        check("config", True, f"provider {cfg.provider}, store {cfg.store_dir}")
    except ConfigError as exc:
        check("config", False, exc.message)
    sock = _socket_path(socket, config) if cfg is None or socket else (
        os.path.expanduser(socket) if socket else str(cfg.socket_path()))
    try:
        with SyncClient(sock) as client:
            health = client.call("daemon.health")
        check("daemon", True, f"running {health.get('version')} on {sock}, "
              f"{health.get('activeCalls')} active call(s), http {health.get('listen')}")
        mode = os.stat(sock).st_mode & 0o777
        check("socket permissions", mode == 0o600, f"{sock} is {mode:o} (want 600)")
    except DaemonUnreachable as exc:
        check("daemon", False, str(exc))
    if cfg is not None and cfg.provider != "mock":
        public = cfg.public_url
        check("public URL", bool(public),
              public or "no publicUrl: carriers cannot reach the webhook (tunnels are not "
                        "started by the daemon yet: run one yourself, e.g. `voicecall expose "
                        "--mode funnel`, and set publicUrl to its URL)")
        if public:
            check("public URL scheme", public.startswith("https://"),
                  "carriers need https" if not public.startswith("https://") else "https")
        check("signature verification", not cfg.skip_signature_verification,
              "ON" if not cfg.skip_signature_verification
              else "skipSignatureVerification is set: anyone can forge webhooks")
    ok = all(c["ok"] for c in checks)
    if json:
        print(_json.dumps({"ok": ok, "checks": checks}))
    else:
        for c in checks:
            print(f"[{'ok' if c['ok'] else '!!'}] {c['check']}: {c['detail']}")
    return EXIT_OK if ok else EXIT_FAILED


def latency(*, json: bool = False, config: str | None = None) -> int:
    """Turn latency percentiles from the journal: callee's last words -> bot's next words.

    Parameters
    ----------
    json
        Print the figures as JSON.
    config
        Config file, used to find the store.
    """
    import itertools

    from .configfile import locate

    path = locate(config, os.environ)[1]
    latest: dict[str, Any] = {}
    try:
        with open(path, "rb") as file:
            for line in file:
                try:
                    record = _json.loads(line)
                    latest[record["callId"]] = record
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    gaps: list[float] = []
    for record in latest.values():
        transcript = record.get("transcript") or []
        for before, after in itertools.pairwise(transcript):
            if before.get("speaker") == "user" and after.get("speaker") == "bot":
                gaps.append(float(after["timestamp"]) - float(before["timestamp"]))
    gaps.sort()

    def pick(q: float) -> float | None:
        return gaps[min(len(gaps) - 1, int(q * len(gaps)))] if gaps else None

    result = {"turns": len(gaps), "calls": len(latest), "p50Ms": pick(0.5), "p90Ms": pick(0.9),
              "p99Ms": pick(0.99), "maxMs": gaps[-1] if gaps else None}
    _emit(result, json, lambda r: (
        f"{r['turns']} turns in {r['calls']} calls: p50 {r['p50Ms']} ms, p90 {r['p90Ms']} ms, "
        f"p99 {r['p99Ms']} ms, max {r['maxMs']} ms" if r["turns"] else "no turns recorded yet"))
    return EXIT_OK


COMMANDS: dict[str, Callable[..., int]] = {
    "serve": serve,
    "call": call,
    "continue": continue_,
    "speak": speak,
    "end": end,
    "status": status,
    "tail": tail,
    "watch": watch,
    "tool": tool,
    "simulate-inbound": simulate_inbound,
    "expose": expose,
    "doctor": doctor,
    "latency": latency,
}


# -- argument binding ----------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.strip("_").replace("_", "-")


def _fast_bind(argv: list[str]) -> tuple[Callable[..., int], dict[str, Any]] | None:
    """Bind ``command --flag value ...`` to a command's keyword-only parameters.

    Anything it does not fully understand (help, positionals, unknown or repeated flags, a
    missing value, a missing required flag, a bad choice) returns None: cyclopts takes over and
    explains. Only str, int and bool parameters are bound here.
    """
    if not argv or argv[0] not in COMMANDS:
        return None
    fn = COMMANDS[argv[0]]
    code = fn.__code__
    if code.co_argcount:  # positional parameters: leave to cyclopts
        return None
    names = code.co_varnames[: code.co_kwonlyargcount]
    defaults = fn.__kwdefaults__ or {}
    hints = fn.__annotations__
    flags = {_flag(n): n for n in names}
    kwargs: dict[str, Any] = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        token = args[i]
        value: str | None = None
        if "=" in token and token.startswith("--"):
            token, value = token.split("=", 1)
        name = flags.get(token)
        if name is None or name in kwargs:
            return None
        hint = str(hints.get(name, ""))
        if hint == "bool":
            if value is not None:
                return None
            kwargs[name] = True
            i += 1
            continue
        if value is None:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        if hint.startswith("int"):
            try:
                kwargs[name] = int(value)
            except ValueError:
                return None
        elif hint.startswith("str") or hint == "str | None":
            kwargs[name] = value
        else:
            return None  # Literal choices etc.: cyclopts validates them
    if any(n not in kwargs and n not in defaults for n in names):
        return None
    return fn, kwargs


def _build_app() -> Any:
    import collections.abc
    import typing

    from cyclopts import App

    # the command annotations are strings; give cyclopts the names they mention
    globals().update(Any=typing.Any, Literal=typing.Literal, Callable=collections.abc.Callable)

    from . import __version__

    app = App(name="voicecall", version=__version__, help_format="plaintext", help=(
        "Drive the voicecall daemon: place and answer phone calls for an AI assistant."))
    for name, fn in COMMANDS.items():
        app.command(fn, name=name)
    return app


def _run_cyclopts(argv: list[str]) -> tuple[Callable[..., int], Any] | int:
    from cyclopts import CycloptsError

    app = _build_app()
    try:
        command, bound, _ = app.parse_args(argv, exit_on_error=False, print_error=True)
    except CycloptsError:
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    return command, bound


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_bind(args)
    if fast is not None:
        fn, kwargs = fast
        return _guard(lambda: fn(**kwargs))
    parsed = _run_cyclopts(args)
    if isinstance(parsed, int):
        return parsed
    command, bound = parsed
    if command not in COMMANDS.values():
        return _guard(lambda: command(*bound.args, **bound.kwargs) or 0)
    return _guard(lambda: command(*bound.args, **bound.kwargs))


def _guard(run: Callable[[], int]) -> int:
    from .rpc.client import DaemonUnreachable
    from .rpc.protocol import RpcError

    try:
        return run()
    except BrokenPipeError:
        # `voicecall ... | head`: the reader left; exit quietly like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except DaemonUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except UsageError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RpcError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from .errors import VoiceCallError

        if isinstance(exc, VoiceCallError):
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_FAILED
        raise


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
