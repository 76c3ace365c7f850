"""An xAI-compatible upstream for the demo, the tests, compose and the benchmark."""

from service.simulator.app import create_app
from service.simulator.state import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app"]
