"""Local stand-in for the xAI Batch service (a real HTTP server); see server.py."""

from emulator.server import RunningEmulator
from emulator.state import EmulatorConfig

__all__ = ["EmulatorConfig", "RunningEmulator"]
