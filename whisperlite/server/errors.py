"""Errors as every face returns them: OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`, which whisper.cpp's and llama.cpp's clients
also read (both servers answer `{"error": ...}` objects)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

# HTTP status → OpenAI's error type names
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          408: "timeout_error", 413: "invalid_request_error", 415: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 501: "not_implemented_error",
          503: "server_busy", 504: "timeout_error"}


class ApiError(Exception):
    """A request that cannot be served: its status, one line for the user, and OpenAI's fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()
