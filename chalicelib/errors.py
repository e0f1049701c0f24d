"""Domain errors, raised by chalicelib modules; only chalicelib/edge.py maps them to HTTP."""

from __future__ import annotations


class MeteringError(Exception):
    """Base class of every error the domain raises on purpose.

    `message` is safe to show to a caller: it never carries AWS error text.
    """

    # The usage event that recorded this failure or refusal, once there is one.
    event_id: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(MeteringError):
    """The stage is configured in a way that cannot work."""


class InvalidRequestError(MeteringError):
    """The caller's input is malformed or out of bounds (400)."""


class AuthenticationError(MeteringError):
    """No token, or a token that does not verify (401)."""


class ForbiddenError(MeteringError):
    """A verified caller that may not do this (403)."""


class IdentityProviderUnavailableError(MeteringError):
    """The signing keys could not be fetched, so no token can be checked (503)."""


class ModelError(MeteringError):
    """The model call failed. `error_code` is the short AWS code, kept for the usage event."""

    def __init__(self, message: str, error_code: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        # Set by the chat service once the failed call has its usage event.
        self.event_id: str | None = None


class ModelThrottledError(ModelError):
    """Bedrock throttled the call (429 with Retry-After)."""

    retry_after_s = 5


class ModelUnavailableError(ModelError):
    """The model refused, failed or could not be reached (502)."""


class UsageNotDurableError(MeteringError):
    """Neither Firehose nor the fallback location accepted a usage event (503)."""


class RateLimitedError(MeteringError):
    """The tenant is over its budget or rate (429 with Retry-After).

    `error_code` names the limit in the `rejected` usage event (BudgetExceeded, RateLimited).
    """

    def __init__(self, message: str, retry_after_s: int, error_code: str = "RateLimited") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.error_code = error_code


class ModelNotAllowedError(ForbiddenError):
    """The model is not one the caller may use: not in the tenant's plan, or not offered by
    the stage (403). The message names the models the caller may use."""

    error_code = "ModelNotAllowed"


class ModelNotPricedError(InvalidRequestError):
    """The request names a model the price table does not price: unknown to Bedrock, or a
    real model this service cannot meter (400). Refused before the model is called."""

    error_code = "ModelNotPriced"


class RequestExceedsPlanError(InvalidRequestError):
    """The request could never fit the tenant's per-minute token limit (400)."""

    error_code = "RequestExceedsPlan"


class DeadlineExceededError(MeteringError):
    """The call could not finish before the request's deadline (504).

    The model may still have been generating when it was given up; the call is recorded as
    `aborted` and not billed.
    """

    error_code = "DeadlineExceeded"


class IdempotencyConflictError(MeteringError):
    """A request with the same Idempotency-Key is still in flight (409 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IdempotencyKeyReusedError(MeteringError):
    """The Idempotency-Key was used before with a different request body (422)."""


class IdempotencyStoreUnavailableError(MeteringError):
    """Idempotency keys cannot be checked, so the call is not run: fail closed (503)."""


class BudgetStoreUnavailableError(MeteringError):
    """The budget counters could not be read or reserved; fail closed (503)."""

    error_code = "BudgetStoreUnavailable"


class AnalyticsUnavailableError(MeteringError):
    """The analytics engine (Athena or local DuckDB) could not answer (503).

    `detail` keeps the engine's own text for logs and the operator CLI; it is never sent to
    an API caller.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class NotFoundError(MeteringError):
    """The named thing does not exist (404)."""
