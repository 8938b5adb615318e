"""How a command's outcome becomes an exit code and one line on stderr.

Exit codes: 0 ok, 1 operation failed (message on stderr), 2 usage error, 3 daemon not
reachable (the message names the socket and how to start the daemon). Commands return a code
or raise; ``guard`` is the one place that turns what they raise into a code and a message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..errors import DaemonUnreachable, Failed, RpcError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def guard(run: Callable[[], int]) -> int:
    """Run a bound command; map what it raises to an exit code and a message on stderr."""
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
        from ..errors import VoiceCallError

        if isinstance(exc, VoiceCallError):
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_FAILED
        raise
