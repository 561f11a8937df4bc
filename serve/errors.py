"""Client-facing errors: every rejection is an HTTP status plus a JSON body ``{"error": code, "detail": message}``."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request (or one video of a job) is rejected; ``detail`` names the file or field and the problem."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail}


def bad_request(code: str, detail: str) -> ServiceError:
    return ServiceError(400, code, detail)


def unprocessable(code: str, detail: str) -> ServiceError:
    return ServiceError(422, code, detail)
