"""voicecall-trio: the phone line of a personal AI assistant."""

__version__ = "0.1.0"
