"""The one symbol matching rule: what a user may type for a market, and which listed symbol it means.

Accepted: the ccxt unified symbol (`BTC/USDT:USDT`, any case) or the Binance id (`BTCUSDT`, any case), with
surrounding blanks ignored. Used by the market catalog (what POST /trades can trade), the signal service (what
has signals, including symbols with data but no exchange metadata) and the precision helper (ccxt's markets).
"""

from collections.abc import Iterable


def exchange_id(unified: str) -> str:
    """The Binance id of a ccxt unified symbol: `BTC/USDT:USDT` -> `BTCUSDT` (base + quote)."""
    return "".join(unified.split(":")[0].split("/")).upper()


def find_symbol(text: str, symbols: Iterable[str]) -> str | None:
    """The symbol of `symbols` (ccxt unified) that `text` names, else None; an exact match wins."""
    key = text.strip()
    upper = key.upper()
    listed = list(symbols)
    if key in listed:
        return key
    return next((s for s in listed if upper == s.upper() or upper == exchange_id(s)), None)
