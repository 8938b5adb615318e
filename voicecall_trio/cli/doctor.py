"""``voicecall doctor``: check the config, the daemon and its socket, the public URL and
webhook signature setup, and say what is wrong in words an operator can act on.

Read-only: it loads the config, asks the daemon for ``daemon.health`` and looks at the socket
file's mode; it changes nothing. Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import json as _json
import os
from typing import Any

from .connect import socket_path
from .outcome import EXIT_FAILED, EXIT_OK


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
    from ..config import load_config
    from ..errors import ConfigError, DaemonUnreachable
    from ..rpc.client import SyncClient

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    cfg = None
    try:
        cfg = load_config(config)
        check("config", True, f"provider {cfg.provider}, store {cfg.store_dir}")
    except ConfigError as exc:
        check("config", False, exc.message)
    sock = socket_path(socket, config) if cfg is None or socket else (
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
    if cfg is not None:
        check("replies", True, _replies(cfg))
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


def _replies(cfg: Any) -> str:
    """Who answers callers when no gateway agent is registered (never the key itself)."""
    from ..agent.chat import is_openai, model_name, shown_url

    host = shown_url(cfg.response_base_url)
    if cfg.response_key():
        return f"built-in: {model_name(cfg.response_model)} at {host} (key set)"
    if not is_openai(cfg.response_base_url):
        return f"built-in: {model_name(cfg.response_model)} at {host} (no key)"
    return ("no built-in replies: set OPENAI_API_KEY or responseApiKey, or point "
            "responseBaseUrl at a local server; until then only a registered agent answers")
