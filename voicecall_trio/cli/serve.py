"""The commands about the daemon itself: ``serve`` runs it, ``expose`` puts its webhook on
the internet with Tailscale (``tunnel.py`` holds the command lines).

``serve`` is the one command that imports trio and the rest of the daemon, and only once it
runs. The ``--socket`` it is given goes to the daemon as an argument; the environment is left
as it was.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

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
    from .. import tunnel
    from ..config import load_config

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
