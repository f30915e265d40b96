"""A fake Binance USDⓈ-M transport for ccxt: an aiohttp.ClientSession stand-in that records every request
and answers from per-endpoint queues of canned Binance responses (or functions of the request). ccxt
runs for real (signing, routing, error mapping); no socket is ever opened."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "test-api-key-1234567890"
SECRET = "test-secret-abcdefghijklmnop"
SIGNED_EXTRAS = {"timestamp", "signature", "recvWindow"}


# ---- the fake transport ---------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    host: str
    path: str
    params: dict[str, str]  # query (GET/DELETE) or form body (POST), as sent
    signed_payload: str  # what was signed: the query / body without `&signature=…`
    headers: dict[str, str]

    @property
    def business(self) -> dict[str, str]:
        """The parameters minus the signing envelope (timestamp, recvWindow, signature)."""
        return {k: v for k, v in self.params.items() if k not in SIGNED_EXTRAS}


@dataclass
class Reply:
    status: int
    body: str


class FakeResponse:
    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.reason = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 503: "Service Unavailable"}.get(
            reply.status, "Error"
        )
        self.headers = {"Content-Type": "application/json"}
        self._body = reply.body

    async def text(self, errors: str = "strict") -> str:
        return self._body

    async def __aenter__(self) -> "FakeResponse":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class FakeBinance:
    """An aiohttp.ClientSession stand-in: records each request and answers from per-endpoint queues."""

    headers: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], list[Reply | BaseException]] = field(default_factory=dict)
    handlers: dict[tuple[str, str], Callable[[Recorded], Any]] = field(default_factory=dict)

    def on(self, method: str, path: str, *replies: Reply | BaseException | dict[str, Any] | list[Any]) -> None:
        queue = self.routes.setdefault((method, path), [])
        for reply in replies:
            queue.append(reply if isinstance(reply, Reply | BaseException) else Reply(200, json.dumps(reply)))

    def get(self, url: Any, **kwargs: Any) -> FakeResponse:
        return self._handle("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> FakeResponse:
        return self._handle("POST", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> FakeResponse:
        return self._handle("DELETE", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> FakeResponse:
        return self._handle("PUT", url, **kwargs)

    def _handle(self, method: str, url: Any, data: bytes | None = None, headers: Any = None, **_: Any) -> FakeResponse:
        parts = urlsplit(str(url))
        raw = (data.decode() if data else "") if method in ("POST", "PUT") else parts.query
        signed_payload = raw.rsplit("&signature=", 1)[0]
        self.requests.append(
            Recorded(method, parts.netloc, parts.path, dict(parse_qsl(raw)), signed_payload, dict(headers or {}))
        )
        handler = self.handlers.get((method, parts.path))
        if handler is not None:
            answer = handler(self.requests[-1])
            return FakeResponse(answer if isinstance(answer, Reply) else Reply(200, json.dumps(answer)))
        queue = self.routes.get((method, parts.path))
        if not queue:
            raise AssertionError(f"unexpected request {method} {parts.path}")
        reply = queue.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return FakeResponse(reply)

    def serve(self, method: str, path: str, answer: "Callable[[Recorded], Reply | dict[str, Any] | list[Any]]") -> None:
        """Answer every request to (method, path) with a function of it (an exchange that keeps state)."""
        self.handlers[(method, path)] = answer

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]


def binance_error(status: int, code: int, msg: str) -> Reply:
    return Reply(status, json.dumps({"code": code, "msg": msg}))


def order_reply(client_id: str, *, side: str = "BUY", qty: str = "0.010", status: str = "FILLED") -> dict[str, Any]:
    filled = status == "FILLED"
    return {
        "orderId": 4093425021,
        "symbol": "BTCUSDT",
        "status": status,
        "clientOrderId": client_id,
        "price": "0.00",
        "avgPrice": "42000.10" if filled else "0.00",
        "origQty": qty,
        "executedQty": qty if filled else "0.000",
        "cumQty": qty if filled else "0.000",
        "cumQuote": "420.00100" if filled else "0.00000",
        "timeInForce": "GTC",
        "type": "MARKET",
        "reduceOnly": False,
        "closePosition": False,
        "side": side,
        "positionSide": "BOTH",
        "stopPrice": "0.00",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": "MARKET",
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "updateTime": 1700000000000,
    }


def algo_reply(
    client_id: str, order_type: str, trigger: str, *, qty: str = "0.010", status: str = "NEW", algo_id: int = 3358
) -> dict[str, Any]:
    return {
        "algoId": algo_id,
        "clientAlgoId": client_id,
        "algoType": "CONDITIONAL",
        "orderType": order_type,
        "symbol": "BTCUSDT",
        "side": "SELL",
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": qty,
        "algoStatus": status,
        "triggerPrice": trigger,
        "price": "0.0",
        "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": False,
        "priceProtect": False,
        "reduceOnly": True,
        "createTime": 1700000000100,
        "updateTime": 1700000000100,
        "triggerTime": 0,
        "goodTillDate": 0,
    }


def position_reply(amount: str, *, entry: str = "42000.1", margin_type: str = "isolated") -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "positionAmt": amount,
        "entryPrice": entry,
        "breakEvenPrice": "42016.9",
        "markPrice": "42100.00000000",
        "unRealizedProfit": "0.99900000" if not amount.startswith("-") else "-0.99900000",
        "liquidationPrice": "33800.12",
        "leverage": "5",
        "maxNotionalValue": "80000000",
        "marginType": margin_type,
        "isolatedMargin": "84.99" if margin_type == "isolated" else "0",
        "isAutoAddMargin": "false",
        "positionSide": "BOTH",
        "notional": str(Decimal(amount) * Decimal("42100")),
        "isolatedWallet": "84.00",
        "updateTime": 1700000000200,
    }


LEVERAGE_BRACKETS = [
    {
        "symbol": "BTCUSDT",
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": 125,
                "notionalCap": 50000,
                "notionalFloor": 0,
                "maintMarginRatio": 0.004,
                "cum": 0.0,
            }
        ],
    }
]
