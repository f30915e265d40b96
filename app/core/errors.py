"""Errors that carry their HTTP status; one handler in app.main renders them."""

from typing import Any


class AppError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class Conflict(AppError):
    status_code = 409
    error = "conflict"


class PriceDeviation(Conflict):
    """The market is further from the price the caller expects than MAX_PRICE_DEVIATION_PCT."""

    error = "price_deviation"


class InvalidRequest(AppError):
    status_code = 422
    error = "invalid_request"


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class ServiceUnavailable(AppError):
    status_code = 503
    error = "service_unavailable"
