"""The request's vocabulary: its context, ASGI helpers, JSON, validation and errors."""
