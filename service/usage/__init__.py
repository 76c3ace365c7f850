"""Money and usage: what a request used and cost, and the ledger that keeps it."""

from service.usage.record import TICKS_PER_USD, Charge, Usage, parse_usage, ticks_to_usd

__all__ = ["TICKS_PER_USD", "Charge", "Usage", "parse_usage", "ticks_to_usd"]
