"""``voicecall expose``: put the webhook behind Tailscale Funnel or Serve, or take it off.

The same code as the daemon's Tailscale tunnel (``tunnel/tailscale_run.py``) for the current
config (``serve.port``, the paths ``tunnel.plan.tailscale_paths`` names), so what ``expose``
proves works is what ``serve`` will do. Prints the public URL (or that it is off); exit 1
with the cause on failure. Imports trio only when it runs.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

from ..errors import Failed
from .outcome import EXIT_OK


def expose(*, mode: Literal["funnel", "serve", "off"] = "funnel", config: str | None = None
           ) -> int:
    """Expose the webhook with Tailscale (funnel: public; serve: tailnet only; off: stop).

    Parameters
    ----------
    mode
        funnel makes serve.path reachable from the internet (what Twilio/Telnyx need);
        serve only within your tailnet; off removes it.
    config
        Config file (serve.port, serve.path, tailscale.path, streaming.streamPath).
    """
    import trio

    from ..config import load_config
    from ..errors import TunnelError
    from ..tunnel import tailscale
    from ..tunnel.plan import tailscale_paths
    from ..tunnel.tailscale_run import find_tailscale, runner, tailscale_off, tailscale_up

    cfg = load_config(config)
    env = dict(os.environ)
    paths = tailscale_paths(cfg)

    async def run() -> str:
        binary = find_tailscale(env)
        if mode == "off":
            await tailscale_off(binary, ("funnel", "serve"), paths, runner(env))
            return f"off: {', '.join(paths)} no longer exposed"
        return await tailscale_up(binary, mode, port=cfg.serve.port, paths=paths,
                                  run=runner(env))

    try:
        shown = trio.run(run)
    except TunnelError as exc:
        raise Failed(f"expose --mode {mode}: {exc.message}") from None
    if mode == "serve":
        print(f"note: {tailscale.SERVE_IS_PRIVATE}", file=sys.stderr)
    if cfg.public_url and mode != "off":
        print(f"note: publicUrl ({cfg.public_url}) is set in the config: the daemon uses it, "
              "not this URL", file=sys.stderr)
    print(shown)
    return EXIT_OK
