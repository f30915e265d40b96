"""The OpenAPI document says what the API really answers.

FastAPI documents a 422 body it never sends (its HTTPValidationError: ours is `validation_error`,
app.main) and nothing of the errors raised past validation. `install_openapi` post-processes the
generated document once: every error status an operation can return, with the body it has, and
examples that work when pasted. tests/test_openapi_contract.py holds the app to it (schemathesis).
"""

from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

TRACE_EXAMPLE = "4f1c2b7e9a0d4e6f8b3c5a7d9e1f2a4b"


class ErrorOut(BaseModel):
    """Every error the app raises itself (AppError and its kinds, a database outage, a body too
    large): a closed code, a readable detail and the request's trace id; some add fields."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Closed code, e.g. not_found, conflict, unauthorized, database_unavailable")
    detail: str = Field(description="What happened, for a person")
    trace_id: str = Field(description="The request's trace id (also the X-Trace-Id header); search the logs by it")


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field")
    msg: str
    type: str = Field(description="Pydantic's error type, e.g. missing, greater_than, json_invalid")


class ValidationErrorOut(BaseModel):
    """The request does not match this document: every issue, and one line summing them up."""

    model_config = ConfigDict(extra="allow")

    error: Literal["validation_error"]
    detail: str = Field(description="All issues on one line: `field: message; ...`")
    errors: list[ValidationIssue]
    trace_id: str


class ReadyOut(BaseModel):
    """/ready: the overall status and each component's own (database, policy store, redis, ...)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "degraded", "not_ready"]
    components: dict[str, dict[str, Any]] = Field(description="Per component: `status` and what it measured")


def _error(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **extra, "trace_id": TRACE_EXAMPLE}


# Operations that never answer 503: they touch neither the database nor the policy backend (Redis),
# or report a missing dependency in their body (market prices). Every other operation documents one.
NO_IO = frozenset(
    {
        "GET /health",
        "GET /api/v2/policy/risk-modes",
        "GET /api/v2/policy/risk-profile",
        "GET /api/v2/risk/blocklist",
        "GET /api/clm/status",
        "GET /api/ceo/status",
        "GET /api/v2/market/prices",
    }
)

_POLICY_CONFLICT = "The policy state changed concurrently (another writer); nothing was changed, retry"

# Where a 404 or 409 happens (grep the services for NotFound / Conflict), with when.
NOT_FOUND: dict[str, str] = {
    "GET /trades/{trade_id}": "No trade has this id",
    "POST /trades/{trade_id}/close": "No trade has this id",
    "DELETE /api/v2/risk/blocklist/{symbol}": "The symbol is not blocked",
    "POST /api/ai/signal": "Unknown symbol, or no candles for it up to `as_of`",
    "GET /api/ai/models/{version_id}": "No model version has this id",
    "GET /positions/{position_id}": "No position has this id",
    "GET /positions/{position_id}/exit-plan": "No position has this id",
    "POST /positions/{position_id}/close": "No position has this id",
}
CONFLICT: dict[str, str] = {
    "POST /trades": "`client_order_id` was used before with a different body (the same body replays the result)",
    "POST /trades/{trade_id}/close": "The trade is already closed; or (price_deviation) the market is further "
    "than MAX_PRICE_DEVIATION_PCT from `price`",
    "POST /positions/{position_id}/close": "The position is already closed; or (price_deviation) the market is "
    "further than MAX_PRICE_DEVIATION_PCT from `price`",
    "POST /api/v2/safety/reset": "There is no emergency halt to reset",
    "POST /api/v2/policy/risk-profile/reset": "The active profile has no overrides; or: " + _POLICY_CONFLICT,
    "POST /api/v2/policy/risk-mode": _POLICY_CONFLICT,
    "PATCH /api/v2/policy/risk-profile": _POLICY_CONFLICT,
    "PUT /api/v2/risk/blocklist/{symbol}": _POLICY_CONFLICT,
    "DELETE /api/v2/risk/blocklist/{symbol}": _POLICY_CONFLICT,
    "POST /api/v2/risk/kill-switch": _POLICY_CONFLICT,
    "POST /api/clm/retrain": "A training job is already running (here or in another process on this host)",
    "POST /api/ceo/unpin": "No operating mode is pinned",
}

DENIAL_EXAMPLE: dict[str, Any] = {
    "error": "risk_denied",
    "reasons": [
        {"code": "MAX_LEVERAGE", "detail": "MAX_LEVERAGE: requested=9 max=5 profile=NORMAL"},
        {"code": "CONFIDENCE_MISSING", "detail": "CONFIDENCE_MISSING: profile=NORMAL requires a confidence"},
    ],
    "profile_name": "NORMAL",
    "trace_id": TRACE_EXAMPLE,
    "decision": {
        "id": "0f5d1c8e-2b7a-4c39-9e61-3a8d4b2f7c10",
        "allowed": False,
        "reasons": [
            {"code": "MAX_LEVERAGE", "detail": "MAX_LEVERAGE: requested=9 max=5 profile=NORMAL"},
            {"code": "CONFIDENCE_MISSING", "detail": "CONFIDENCE_MISSING: profile=NORMAL requires a confidence"},
        ],
        "assumptions": ["price_as_of missing: taken as the request time", "stop_loss missing: assumed 2%"],
        "profile_name": "NORMAL",
        "risk_pct": "0.09",
        "limits": {"profile": {"max_leverage": "5"}, "hard": {"max_leverage": "125"}, "equity": "10000"},
        "client_order_id": None,
        "trade_id": None,
        "symbol": "BTC/USDT:USDT",
        "side": "LONG",
        "notional": "450",
        "leverage": "9",
        "price": "64000.5",
        "trace_id": TRACE_EXAMPLE,
        "created_at": "2026-11-21T12:00:00.123456Z",
    },
}

VALIDATION_EXAMPLE: dict[str, Any] = {
    "error": "validation_error",
    "detail": "leverage: Input should be greater than 0",
    "errors": [{"loc": ["body", "leverage"], "msg": "Input should be greater than 0", "type": "greater_than"}],
    "trace_id": TRACE_EXAMPLE,
}

_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same client_order_id",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _adder(responses: dict[str, Any]) -> Callable[..., None]:
    """Documents a status: keeps what the route declared, unless `replace` (FastAPI's guesses)."""

    def add(status: int, description: str, content: dict[str, Any], *, replace: bool = False) -> None:
        entry = responses.setdefault(str(status), {"description": description})
        if replace and description:
            entry["description"] = description
        if replace or "content" not in entry:
            entry["content"] = content

    return add


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method in _METHODS:
                yield f"{method.upper()} {path}", operation


def _document(schema: dict[str, Any]) -> None:
    """Rewrite the generated `schema` in place (see the module docstring)."""
    _, definitions = models_json_schema(
        [(m, "serialization") for m in (ErrorOut, ValidationErrorOut, ReadyOut)],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("headers", {})["TraceId"] = {
        "description": "The request's trace id (the one sent in X-Trace-Id, else a new one); in every log line",
        "schema": {"type": "string"},
    }
    components = schema["components"].setdefault("schemas", {})
    components.update(definitions["$defs"])
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)

    error = _ref("ErrorOut")
    seen: set[str] = set()
    for key, operation in _operations(schema):
        seen.add(key)
        responses: dict[str, Any] = operation.setdefault("responses", {})

        add = _adder(responses)
        if "requestBody" in operation:
            add(
                400,
                "The body could not be read (e.g. not UTF-8 text)",
                _json(error, _error("bad_request", "There was an error parsing the body")),
            )
            add(
                413,
                "The body is larger than MAX_REQUEST_BODY_BYTES; nothing was read or stored",
                _json(error, _error("payload_too_large", "the request body exceeds 65536 bytes")),
            )
        # The API key scheme appears on exactly the operations depending on `authorized_container`.
        if any("APIKeyHeader" in requirement for requirement in operation.get("security", ())):
            add(401, "Missing or wrong X-API-Key", _json(error, _error("unauthorized", "missing or wrong X-API-Key")))
        if "422" in responses:
            responses["422"]["description"] = (
                "`validation_error`: the request does not match this document (every issue listed); or "
                "`invalid_request`: well-formed but refused, e.g. an unknown symbol. Nothing was stored"
            )
            add(
                422,
                "",
                _json({"anyOf": [_ref("ValidationErrorOut"), error]}, VALIDATION_EXAMPLE),
                replace=True,
            )
        in_path = any(p.get("in") == "path" for p in operation.get("parameters", ()))
        if key in NOT_FOUND or in_path:
            # A path parameter the route's pattern refuses (e.g. a line break) matches no route: Starlette's 404.
            found = NOT_FOUND.get(key)
            add(
                404,
                f"{found}; or no route matches the path" if found else "No route matches the path",
                _json(
                    error,
                    _error("not_found", found.lower() if found else "Not Found"),
                ),
            )
        if key in CONFLICT:
            add(409, CONFLICT[key], _json(error, _error("conflict", CONFLICT[key].lower())))
        if key == "GET /ready":
            ready = _json(_ref("ReadyOut"))
            add(
                200,
                "`ready`, or `degraded` (e.g. the last known profile serves): each component says why",
                ready,
                replace=True,
            )
            add(
                503,
                "`not_ready`: the database does not answer, or the safety state cannot be read",
                ready,
                replace=True,
            )
        elif key not in NO_IO:
            add(
                503,
                "A dependency is unavailable (database, policy backend, market data, or the service is "
                "disabled); nothing was changed. Retry later (with the same client_order_id)",
                _json(
                    error,
                    _error("database_unavailable", "the database is unavailable (connection_refused); retry shortly"),
                ),
            )
            responses["503"].setdefault("headers", {})["Retry-After"] = {
                "description": "Seconds to wait before retrying (sent with database_unavailable)",
                "schema": {"type": "string"},
            }
        if key == "POST /trades":
            responses["201"]["headers"] = _REPLAYED
            denied = responses.get("403")
            if denied is not None:
                denied["headers"] = _REPLAYED
                denied["content"]["application/json"]["example"] = DENIAL_EXAMPLE
        for response in responses.values():
            response.setdefault("headers", {})["X-Trace-Id"] = {"$ref": "#/components/headers/TraceId"}
        operation["responses"] = dict(sorted(responses.items()))
    missing = (set(NOT_FOUND) | set(CONFLICT) | NO_IO) - seen
    if missing:
        raise RuntimeError(f"app.core.openapi names operations the app does not have: {sorted(missing)}")


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) return the document described above, built once."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached until the routes change
        if "ErrorOut" not in schema.get("components", {}).get("schemas", {}):
            _document(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
