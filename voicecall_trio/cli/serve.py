"""``voicecall serve``: run the daemon (``expose`` lives in ``expose.py``).

``serve`` is the one command that imports trio and the rest of the daemon, and only once it
runs. The ``--socket`` it is given goes to the daemon as an argument; the environment is left
as it was.
"""

from __future__ import annotations

import os

from ..errors import Failed
from .outcome import EXIT_OK


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

    from ..config import load_config
    from ..daemon import configure_logging, serve_forever
    from ..errors import DaemonStartError

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
