"""``voicecall serve``: run the daemon (``expose`` lives in ``expose.py``).

``serve`` is the one command that imports trio and the rest of the daemon, and only once it
runs. The ``--socket`` it is given goes to the daemon as an argument; the environment is left
as it was.
"""

from __future__ import annotations

import os
from typing import Literal

from ..errors import Failed
from .outcome import EXIT_FAILED, EXIT_OK


def serve(*, config: str | None = None, socket: str | None = None,
          log_format: Literal["text", "json"] = "text",
          log_level: Literal["debug", "info", "warning"] = "info") -> int:
    """Run the daemon in the foreground (what systemd starts).

    Parameters
    ----------
    config
        Config file (JSON, JSON5 or TOML); default VOICECALL_CONFIG or
        ~/.config/voicecall/config.{toml,json,json5}. SIGHUP re-reads it.
    socket
        Control socket path (default <store>/voicecall.sock).
    log_format
        On stderr: text, or json (one object a line: ts, level, logger, msg, exc).
        Secrets are redacted either way.
    log_level
        debug shows phone numbers in full; info and warning mask them.
    """
    import logging
    import signal
    from pathlib import Path

    import msgspec

    from ..config import load_config
    from ..configfile import default_config_path
    from ..daemon import serve_forever
    from ..errors import ConfigError, DaemonStartError
    from ..logs import configure_logging
    from ..redact import Redactor, config_secrets

    # until the daemon's SIGHUP handler is installed, a reload request must not kill it (the
    # default action); the file is read just below, so nothing is missed before that
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    redactor = Redactor(config_secrets({}, os.environ))
    configure_logging(log_level, log_format=log_format, redactor=redactor)
    log = logging.getLogger("voicecall.daemon")

    def refuse(message: str) -> int:
        if log_format == "json":  # stderr stays one JSON object a line
            log.error("%s", message)
            return EXIT_FAILED
        raise Failed(message)

    path = config if config is not None else default_config_path(os.environ)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return refuse(exc.message)
    redactor.add(config_secrets(msgspec.to_builtins(cfg), os.environ))
    socket_path = Path(os.path.expanduser(socket)) if socket else None
    try:
        serve_forever(cfg, socket_path=socket_path,
                      config_path=Path(path).absolute() if path is not None else None)
    except DaemonStartError as exc:
        return refuse(exc.message)
    except KeyboardInterrupt:
        pass
    except Exception:  # through the log handler (redacted), not Python's raw traceback
        log.critical("the daemon stopped on an error", exc_info=True)
        return EXIT_FAILED
    return EXIT_OK
