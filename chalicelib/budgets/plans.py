"""Tenant plans: what a tenant may spend and how fast, and which models it may use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypedDict

from chalicelib.bodies import parse_json_body
from chalicelib.budgets.limits import Limits
from chalicelib.errors import ConfigurationError, InvalidRequestError
from chalicelib.pricing import PriceTable, UnknownModelError, format_usd, parse_usd

MAX_BUDGET_USD = Decimal(1_000_000_000)
MAX_BUDGET_DECIMALS = 6  # micro-dollars: finer budgets mean nothing on an invoice
MAX_PER_MINUTE = 1_000_000_000
MAX_ALLOWED_MODELS = 50
PLAN_FIELDS = ("monthly_budget_usd", "tokens_per_minute", "requests_per_minute", "allowed_models")


@dataclass(frozen=True)
class Plan:
    """A tenant's monthly budget, rate limits and allowed models."""

    monthly_budget_usd: Decimal
    tokens_per_minute: int
    requests_per_minute: int
    allowed_models: tuple[str, ...]

    @property
    def limits(self) -> Limits:
        """The numbers the counters are checked against."""
        return Limits(
            monthly_budget_usd=self.monthly_budget_usd,
            tokens_per_minute=self.tokens_per_minute,
            requests_per_minute=self.requests_per_minute,
        )


class PlanDocument(TypedDict):
    """A plan on the wire (admin API, CLI): the budget as a decimal string."""

    monthly_budget_usd: str
    tokens_per_minute: int
    requests_per_minute: int
    allowed_models: list[str]


def money_text(amount: Decimal) -> str:
    """USD as exact decimal text with at least cents ("25.50", "0.000009")."""
    whole, _, fraction = format_usd(amount).partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def plan_document(plan: Plan) -> PlanDocument:
    """The plan as JSON-ready data."""
    return PlanDocument(
        monthly_budget_usd=money_text(plan.monthly_budget_usd),
        tokens_per_minute=plan.tokens_per_minute,
        requests_per_minute=plan.requests_per_minute,
        allowed_models=list(plan.allowed_models),
    )


def parse_plan_body(raw_body: bytes | str | None, prices: PriceTable, default_model: str) -> Plan:
    """Validate a PUT body; InvalidRequestError naming the field at fault."""
    body = parse_json_body(
        raw_body, required="Request body is required: a JSON object describing the plan."
    )
    return parse_plan(body, prices, default_model)


def parse_plan(body: object, prices: PriceTable, default_model: str) -> Plan:
    """Validate a plan document; `allowed_models` defaults to the stage's model."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The plan must be a JSON object.")
    unknown = sorted(set(body) - set(PLAN_FIELDS))
    if unknown:
        raise InvalidRequestError(
            f"Unknown field {unknown[0]!r}; a plan has {', '.join(PLAN_FIELDS)}."
        )
    for name in PLAN_FIELDS[:3]:
        if name not in body:
            raise InvalidRequestError(f"'{name}' is required.")
    models = body.get("allowed_models", [default_model])
    return Plan(
        monthly_budget_usd=parse_budget(body["monthly_budget_usd"]),
        tokens_per_minute=_per_minute(body["tokens_per_minute"], "tokens_per_minute"),
        requests_per_minute=_per_minute(body["requests_per_minute"], "requests_per_minute"),
        allowed_models=parse_allowed_models(models, prices),
    )


def parse_budget(value: object, name: str = "monthly_budget_usd") -> Decimal:
    """A non-negative USD amount given as a decimal string ("25.00")."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a decimal string such as \"25.00\".")
    try:
        amount = parse_usd(value)
    except ValueError:
        raise InvalidRequestError(f"'{name}' must be a decimal string such as \"25.00\".") from None
    if amount < 0:
        raise InvalidRequestError(f"'{name}' must not be negative.")
    if amount > MAX_BUDGET_USD:
        raise InvalidRequestError(f"'{name}' must be at most {MAX_BUDGET_USD}.")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_BUDGET_DECIMALS:
        raise InvalidRequestError(f"'{name}' has more than {MAX_BUDGET_DECIMALS} decimal places.")
    return amount + Decimal(0)  # normalizes -0 to 0


def _per_minute(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"'{name}' must be a whole number.")
    if not 1 <= value <= MAX_PER_MINUTE:
        raise InvalidRequestError(f"'{name}' must be between 1 and {MAX_PER_MINUTE}.")
    return value


def parse_allowed_models(value: object, prices: PriceTable) -> tuple[str, ...]:
    """A non-empty list of distinct model ids, each one priced by `prices`."""
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("'allowed_models' must be a non-empty list of model ids.")
    if len(value) > MAX_ALLOWED_MODELS:
        raise InvalidRequestError(f"'allowed_models' may name at most {MAX_ALLOWED_MODELS}.")
    models: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise InvalidRequestError("'allowed_models' must contain model id strings.")
        try:
            prices.base_model_of(item)
        except UnknownModelError:
            raise InvalidRequestError(
                f"'allowed_models': no price for model {item!r} in price table {prices.version}."
            ) from None
        if item not in models:
            models.append(item)
    return tuple(models)


def default_plan(
    budget_text: str, tokens_per_minute: int, requests_per_minute: int, model_id: str
) -> Plan:
    """The stage's plan for tenants without one; ConfigurationError if the settings are bad."""
    try:
        budget = parse_budget(budget_text, "DEFAULT_MONTHLY_BUDGET_USD")
        tpm = _per_minute(tokens_per_minute, "DEFAULT_TOKENS_PER_MINUTE")
        rpm = _per_minute(requests_per_minute, "DEFAULT_REQUESTS_PER_MINUTE")
    except InvalidRequestError as exc:
        raise ConfigurationError(exc.message) from None
    return Plan(budget, tpm, rpm, (model_id,))


def model_allowed(plan: Plan, model_id: str, prices: PriceTable) -> bool:
    """Whether the plan allows `model_id`, by id or by the base model behind it."""
    if model_id in plan.allowed_models:
        return True
    wanted = prices.base_model_of(model_id)
    for allowed in plan.allowed_models:
        try:
            if prices.base_model_of(allowed) == wanted:
                return True
        except UnknownModelError:
            continue  # a model priced once but not in this version allows nothing
    return False


def usable_models(plan: Plan, offered: Sequence[str], prices: PriceTable) -> tuple[str, ...]:
    """The model ids a tenant on `plan` may name: those the stage offers (`offered`, as they
    are called) that the plan allows."""
    usable = []
    for model_id in offered:
        try:
            if model_allowed(plan, model_id, prices):
                usable.append(model_id)
        except UnknownModelError:
            continue  # an offered model this price version does not price allows nothing
    return tuple(usable)
