"""Which model ids the stand-in answers for: every priced model, by id, profile id or ARN."""

from __future__ import annotations

from collections.abc import Mapping

from chalicelib.pricing import PriceTable, UnknownModelError, load_price_table
from local.bedrock_server.wire import ResourceNotFoundError, ValidationError

# What Bedrock answers for a model id it does not know.
INVALID_MODEL_MESSAGE = "The provided model identifier is invalid."


class ModelCatalog:
    """The models behind the stand-in: one small local model answers for all of them.

    A model id is served if it resolves to a model the app's price table prices (the same
    resolution the app uses: cross-region inference profile ids, foundation-model and
    inference-profile ARNs, and application inference profile ARNs mapped in `aliases`).
    Any other is refused as Bedrock refuses it: an unknown id is a ValidationException, an
    ARN naming nothing it knows a ResourceNotFoundException.
    """

    def __init__(
        self, prices: PriceTable | None = None, aliases: Mapping[str, str] | None = None
    ) -> None:
        table = prices or load_price_table()
        self._prices = table.with_aliases(aliases or {})

    @property
    def model_ids(self) -> frozenset[str]:
        """The base model ids served."""
        return self._prices.model_ids

    def check(self, model_id: str) -> str:
        """The base model behind `model_id`; raise the error Bedrock gives if it has none."""
        try:
            return self._prices.base_model_of(model_id)
        except UnknownModelError:
            if model_id.startswith("arn:"):
                raise ResourceNotFoundError(
                    f"The resource {model_id} was not found: no such model or inference profile."
                ) from None
            raise ValidationError(INVALID_MODEL_MESSAGE) from None
