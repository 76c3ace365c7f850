"""An xAI-compatible upstream for the demo, the tests, compose and the benchmark."""

from service.simulator.app import SimulatorConfig, create_app

__all__ = ["SimulatorConfig", "create_app"]
