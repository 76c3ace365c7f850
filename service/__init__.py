"""grok-gateway: an OpenAI-compatible gateway in front of the xAI Grok API."""

__version__ = "0.1.0"
