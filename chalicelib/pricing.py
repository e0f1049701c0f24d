"""Exact per-call cost from a versioned price table (Decimal, never float)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from chalicelib.errors import ConfigurationError
from chalicelib.usage import TokenUsage

PRICES_DIR = Path(__file__).parent / "data" / "prices"
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
# At most 6 decimals per million tokens keeps every cost a whole number of pico-dollars,
# which is how budget counters store money (chalicelib.budgets.limits).
MAX_PRICE_DECIMALS = 6

# Cross-region inference profile ids put a geography in front of the base model id.
_GEO_PREFIX = re.compile(r"^(?:us|us-gov|eu|apac|jp|au|ca|global)\.")
_FOUNDATION_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:foundation-model/(?P<id>.+)$")
_SYSTEM_PROFILE_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:inference-profile/(?P<id>.+)$")
_APPLICATION_PROFILE_ARN = re.compile(
    r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:application-inference-profile/.+$"
)
# Provisioned-throughput variants name a context window after the version ("...-v1:0:200k");
# on-demand calls to them are billed at the base model's rates.
_CONTEXT_SUFFIX = re.compile(r"(?<=:\d):\d+k$")


class UnknownModelError(ConfigurationError):
    """A model with no price: refused at configuration time, never billed at zero."""


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens of each kind."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


@dataclass(frozen=True)
class Cost:
    """The exact price of one call."""

    usd: Decimal
    price_version: str

    @property
    def usd_text(self) -> str:
        """Fixed-point decimal string, as the usage event carries it."""
        return format_usd(self.usd)


def format_usd(amount: Decimal) -> str:
    """A Decimal as plain fixed-point text ('0.00001325', never '1.325E-5')."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def parse_usd(text: object) -> Decimal:
    """Parse a decimal amount; raise ValueError for anything that is not a finite number."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError("amount must be a decimal string")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    return value


def base_model_id(model_id: str, aliases: Mapping[str, str] | None = None) -> str:
    """The foundation model behind a model id, inference profile id or ARN.

    Application inference profile ARNs name no model; they must appear in `aliases`
    (filled from Bedrock's GetInferenceProfile, see chalicelib.model_profiles).
    """
    if aliases and model_id in aliases:
        return base_model_id(aliases[model_id])
    if _APPLICATION_PROFILE_ARN.match(model_id):
        raise UnknownModelError(
            f"application inference profile {model_id} is not mapped to a base model"
        )
    for pattern in (_FOUNDATION_ARN, _SYSTEM_PROFILE_ARN):
        match = pattern.match(model_id)
        if match:
            model_id = match.group("id")
            break
    return _CONTEXT_SUFFIX.sub("", _GEO_PREFIX.sub("", model_id))


def is_application_profile(model_id: str) -> bool:
    """Whether `model_id` is an application inference profile ARN (it names no model)."""
    return bool(_APPLICATION_PROFILE_ARN.match(model_id))


class PriceTable:
    """One published version of the price table."""

    def __init__(
        self,
        version: str,
        prices: Mapping[str, ModelPrice],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        self._prices = dict(prices)
        self._aliases = dict(aliases or {})

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> PriceTable:
        """Build a table from the JSON document's parsed form."""
        version = document.get("price_version")
        models = document.get("models")
        if not isinstance(version, str) or not isinstance(models, dict):
            raise ConfigurationError("price table needs 'price_version' and 'models'")
        prices = {}
        for model_id, row in models.items():
            if not isinstance(row, dict) or not row.get("as_of") or not row.get("source"):
                raise ConfigurationError(f"price row for {model_id} needs 'as_of' and 'source'")
            try:
                prices[model_id] = ModelPrice(
                    input=parse_usd(row["input"]),
                    output=parse_usd(row["output"]),
                    cache_read=parse_usd(row["cache_read"]),
                    cache_write=parse_usd(row["cache_write"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"bad price row for {model_id}: {exc}") from None
            for kind, amount in vars(prices[model_id]).items():
                exponent = amount.as_tuple().exponent
                if amount < 0 or (isinstance(exponent, int) and exponent < -MAX_PRICE_DECIMALS):
                    raise ConfigurationError(
                        f"price {kind} of {model_id} must be >= 0 with at most "
                        f"{MAX_PRICE_DECIMALS} decimals"
                    )
        return cls(version, prices)

    def with_aliases(self, aliases: Mapping[str, str]) -> PriceTable:
        """The same prices, also resolving the given profile ARNs."""
        return PriceTable(self.version, self._prices, {**self._aliases, **aliases})

    @property
    def model_ids(self) -> frozenset[str]:
        """The base model ids this version prices."""
        return frozenset(self._prices)

    @property
    def aliases(self) -> dict[str, str]:
        """Application inference profile ARNs and the model ids they resolve to."""
        return dict(self._aliases)

    def base_model_of(self, model_id: str) -> str:
        """The priced base model behind a model id, profile id or ARN (UnknownModelError)."""
        base = base_model_id(model_id, self._aliases)
        if base not in self._prices:
            raise UnknownModelError(
                f"no price for model {model_id!r} in price table {self.version}"
            )
        return base

    def price_of(self, model_id: str) -> ModelPrice:
        """Prices for a model id, profile id or ARN; UnknownModelError if there are none."""
        base = base_model_id(model_id, self._aliases)
        try:
            return self._prices[base]
        except KeyError:
            raise UnknownModelError(
                f"no price for model {model_id!r} in price table {self.version}"
            ) from None

    def cost(self, model_id: str, tokens: TokenUsage) -> Cost:
        """Exact cost of a call with these token counts."""
        price = self.price_of(model_id)
        per_million = (
            tokens.input_tokens * price.input
            + tokens.output_tokens * price.output
            + tokens.cache_read_input_tokens * price.cache_read
            + tokens.cache_write_input_tokens * price.cache_write
        )
        return Cost(usd=per_million / TOKENS_PER_PRICE_UNIT, price_version=self.version)


def available_versions() -> list[str]:
    """Every published price version, oldest first."""
    return sorted(path.stem for path in PRICES_DIR.glob("*.json"))


@functools.cache
def load_price_table(version: str | None = None) -> PriceTable:
    """Load one version (default: the newest) from chalicelib/data/prices/ (cached)."""
    versions = available_versions()
    if not versions:
        raise ConfigurationError("no price tables in chalicelib/data/prices")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise ConfigurationError(f"unknown price version {chosen!r}; have {versions}")
    document = json.loads((PRICES_DIR / f"{chosen}.json").read_text())
    table = PriceTable.from_document(document)
    if table.version != chosen:
        raise ConfigurationError(f"price file {chosen}.json declares version {table.version}")
    return table
