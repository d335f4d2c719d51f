"""Local stand-in for the xAI Batch service, with an OpenAI Batch mode (a real HTTP
server); see server.py."""

from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator

__all__ = ["EmulatorConfig", "RunningEmulator"]
