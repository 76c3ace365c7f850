"""Money and usage, in one place.

- `record`: what one request used and cost (`Usage`), the measures the ledger counts
  (`Totals`, `MEASURES`) and the charge a release writes (`Charge`);
- `prices` and `cost`: the key file's price table, and a request's cost in ticks;
- `charge`: the charge taken when a request ends, and the usage metrics;
- `ledger`: the ledger's rows, in Redis or in memory, as the reports read them;
- `report`: the reports' query, sums and renderings (JSON, CSV, a table).
"""

from service.usage.record import TICKS_PER_USD, Charge, Usage, parse_usage, ticks_to_usd

__all__ = ["TICKS_PER_USD", "Charge", "Usage", "parse_usage", "ticks_to_usd"]
