"""``python -m voicecall_trio.cli``: the same as the ``voicecall`` script."""

from . import entry

entry()
