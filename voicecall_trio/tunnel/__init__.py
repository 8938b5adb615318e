"""Putting the webhook on the internet: ngrok or Tailscale, run and watched by the daemon.

Pure modules (stdlib only, no trio, so the CLI pays nothing for importing them):

- ``plan``: which public URL the config asks for (``publicUrl`` wins, then ``tunnel.provider``,
  then the legacy ``tailscale.mode``);
- ``ngrok``: the agent's command line and environment, and what its JSON log lines say;
- ``tailscale``: the ``tailscale`` command lines and what their output says;
- ``backoff``: how long to wait before restarting a tunnel that died.

trio shells: ``ngrok_run`` and ``tailscale_run`` (one tunnel's life), ``supervisor`` (the task
in the daemon's nursery that restarts a dying tunnel and reports each new URL) and ``task``
(the daemon's one entry point).
"""

from __future__ import annotations

from .plan import TunnelPlan, plan_for
from .tailscale import (
    NOT_INSTALLED,
    SERVE_IS_PRIVATE,
    TailscaleMode,
    expose_commands,
    local_target,
    status_command,
    step_failure,
)

__all__ = [
    "NOT_INSTALLED",
    "SERVE_IS_PRIVATE",
    "TailscaleMode",
    "TunnelPlan",
    "expose_commands",
    "local_target",
    "plan_for",
    "status_command",
    "step_failure",
]
