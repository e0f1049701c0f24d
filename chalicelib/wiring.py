"""Composition root: lazily built, cached AWS clients and adapters; tests override them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from chalicelib.bedrock import BedrockModel
from chalicelib.budgets.alerts import AlertPublisher, BudgetAlerts, SnsAlertPublisher
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.budgets.plans import default_plan
from chalicelib.budgets.repair import S3UsageEventFinder, UsageEventFinder, repair_budgets
from chalicelib.budgets.service import BudgetService
from chalicelib.budgets.store import BudgetStore
from chalicelib.chat import ChatLimits, ChatService
from chalicelib.errors import ConfigurationError
from chalicelib.firehose import FirehoseWriter
from chalicelib.identity import IdTokenVerifier
from chalicelib.model_profiles import BedrockProfileLookup, ProfileLookup, resolve_aliases
from chalicelib.pricing import PriceTable, load_price_table
from chalicelib.recorder import UsageRecorder
from chalicelib.settings import Settings

if TYPE_CHECKING:
    from chalicelib.analytics.engines import QueryEngine

T = TypeVar("T")

# Timeouts and retries per AWS service used on the request path. Firehose and Bedrock retries
# are mostly ours (resend of failed records; throttling mapped to 429), so botocore's are few.
# `total_max_attempts` counts calls; botocore's `max_attempts` would count retries.
_CLIENT_OPTIONS: dict[str, dict[str, Any]] = {
    "firehose": {
        "connect_timeout": 2,
        "read_timeout": 5,
        "retries": {"mode": "standard", "total_max_attempts": 2},
    },
    "s3": {
        "connect_timeout": 2,
        "read_timeout": 10,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    },
    "dynamodb": {
        "connect_timeout": 2,
        "read_timeout": 5,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    },
    "sns": {
        "connect_timeout": 2,
        "read_timeout": 5,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    },
}


class Wiring:
    """Builds each dependency once per process (per configuration), on first use."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # builders nest (a recorder builds its clients)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._overrides: dict[str, Any] = {}

    def settings(self) -> Settings:
        """Settings for the request that is running now."""
        override = self._overrides.get("settings")
        return override if override is not None else Settings.from_env()

    def override(self, **dependencies: Any) -> None:
        """Replace named dependencies (tests): settings, model, recorder, verifier, clients."""
        self._overrides.update(dependencies)

    def reset(self) -> None:
        """Forget overrides and every cached object."""
        with self._lock:
            self._overrides.clear()
            self._cache.clear()

    def get(self, name: str, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """The overridden `name`, else the cached object for `key`, built once."""
        if name in self._overrides:
            return self._overrides[name]  # type: ignore[no-any-return]
        cache_key = (name, *key)
        with self._lock:
            if cache_key not in self._cache:
                self._cache[cache_key] = build()
            return self._cache[cache_key]  # type: ignore[no-any-return]

    def client(self, service: str, settings: Settings, **options: Any) -> Any:
        """A boto3 client for `service` in the stage's region (thread-safe once built)."""

        def build() -> Any:
            import boto3
            from botocore.config import Config

            config = Config(**{**_CLIENT_OPTIONS.get(service, {}), **options})
            return boto3.session.Session().client(
                service, region_name=settings.region, config=config
            )

        key = (settings.region, repr(sorted(options.items())))
        return self.get(f"client:{service}", key, build)


wiring = Wiring()


def price_table(settings: Settings) -> PriceTable:
    """The current price table; the stage's model must be priced (checked now, not at billing).

    An application inference profile as the model is resolved to its base model here, from
    MODEL_ALIASES or Bedrock's GetInferenceProfile.
    """

    def build() -> PriceTable:
        aliases = resolve_aliases(
            [settings.model_id], dict(settings.model_aliases), lambda: profile_lookup(settings)
        )
        table = load_price_table().with_aliases(aliases)
        table.price_of(settings.model_id)
        return table

    return wiring.get("prices", (settings.model_id, settings.model_aliases), build)


def profile_lookup(settings: Settings) -> ProfileLookup:
    """Bedrock's control plane, for application inference profiles (built only if needed)."""
    client = wiring.client("bedrock", settings)
    return wiring.get("profile_lookup", (id(client),), lambda: BedrockProfileLookup(client))


def model(settings: Settings) -> BedrockModel:
    """The Bedrock adapter."""
    client = wiring.client(
        "bedrock-runtime",
        settings,
        connect_timeout=5,
        read_timeout=settings.bedrock_read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    return wiring.get("model", (id(client),), lambda: BedrockModel(client))


def recorder(settings: Settings) -> UsageRecorder:
    """Firehose first, then the fallback prefix in the analytics bucket."""

    def build() -> UsageRecorder:
        writer = FirehoseWriter(
            settings.firehose_stream_name,
            client=wiring.client("firehose", settings),
            max_attempts=settings.firehose_max_attempts,
        )
        return UsageRecorder(
            writer,
            bucket=settings.analytics_bucket,
            fallback_prefix=settings.fallback_prefix,
            s3_client=wiring.client("s3", settings),
        )

    key = (
        settings.region,
        settings.firehose_stream_name,
        settings.analytics_bucket,
        settings.fallback_prefix,
        settings.firehose_max_attempts,
    )
    return wiring.get("recorder", key, build)


def verifier(settings: Settings) -> IdTokenVerifier:
    """Checks ID tokens in the app (local stage); caches the pool's signing keys."""
    key = (settings.token_issuer, settings.user_pool_client_id, settings.resolved_jwks_url)
    return wiring.get(
        "verifier",
        key,
        lambda: IdTokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.user_pool_client_id,
            jwks_url=settings.resolved_jwks_url,
        ),
    )


def chat_service(settings: Settings) -> ChatService:
    """The chat use case, wired to the stage's model, recorder and prices."""
    return ChatService(
        model=model(settings),
        recorder=recorder(settings),
        prices=price_table(settings),
        model_id=settings.model_id,
        stage=settings.stage,
        budget=budget_service(settings) if settings.budgets_enabled else None,
    )


def chat_limits(settings: Settings) -> ChatLimits:
    return ChatLimits(
        max_prompt_chars=settings.max_prompt_chars,
        default_max_tokens=settings.default_max_tokens,
        max_tokens_limit=settings.max_tokens_limit,
    )


def analytics_s3(settings: Settings) -> Any:
    """S3 for the partition job and the local query engine: longer reads, more retries."""
    return wiring.client(
        "s3", settings, read_timeout=60, retries={"mode": "standard", "total_max_attempts": 5}
    )


def analytics_session(settings: Settings) -> Any:
    """The boto3 session awswrangler builds its Athena, Glue and S3 clients from."""

    def build() -> Any:
        import boto3

        return boto3.session.Session(region_name=settings.region)

    return wiring.get("analytics_session", (settings.region,), build)


def query_engine(settings: Settings) -> QueryEngine:
    """Where usage SQL runs: Athena when deployed, DuckDB over the local curated data."""

    def build() -> QueryEngine:
        from chalicelib.analytics.engines import engine_for

        return engine_for(
            settings, s3=analytics_s3(settings), boto3_session=analytics_session(settings)
        )

    key = (
        settings.query_engine,
        settings.region,
        settings.analytics_bucket,
        settings.curated_prefix,
        settings.glue_database,
        settings.glue_table,
        settings.athena_workgroup,
    )
    return wiring.get("query_engine", key, build)


# -- budgets ------------------------------------------------------------------------------


def budget_store(settings: Settings) -> BudgetStore:
    """Plans and counters in the plans table."""
    if not settings.plans_table:
        raise ConfigurationError("PLANS_TABLE must be set where budgets or plans are used")
    return wiring.get(
        "budget_store",
        (settings.region, settings.plans_table),
        lambda: DynamoBudgetStore(settings.plans_table, client=wiring.client("dynamodb", settings)),
    )


def alert_publisher(settings: Settings) -> AlertPublisher:
    """The budget-alerts topic."""
    return wiring.get(
        "alert_publisher",
        (settings.region, settings.alerts_topic_arn),
        lambda: SnsAlertPublisher(settings.alerts_topic_arn, client=wiring.client("sns", settings)),
    )


def budget_clock() -> Callable[[], datetime]:
    """The budget's wall clock (UTC); tests override it to cross minutes and months."""
    return wiring.get("budget_clock", (), lambda: _utc_now)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def budget_service(settings: Settings) -> BudgetService:
    """Plans, reservations and alerts for the stage (alerts only if a topic is configured)."""
    store = budget_store(settings)
    clock = budget_clock()
    alerts = None
    if settings.alerts_topic_arn:
        alerts = BudgetAlerts(store, alert_publisher(settings), now=clock)
    return BudgetService(
        store=store,
        prices=price_table(settings),
        default_plan=default_plan(
            settings.default_monthly_budget_usd,
            settings.default_tokens_per_minute,
            settings.default_requests_per_minute,
            settings.model_id,
        ),
        alerts=alerts,
        reservation_ttl_s=settings.reservation_ttl_s,
        default_max_tokens=settings.default_max_tokens,
        now=clock,
    )


def usage_event_finder(settings: Settings) -> UsageEventFinder:
    """Reads usage events back from the analytics bucket (for the budget repair job)."""
    return wiring.get(
        "usage_event_finder",
        (settings.region, settings.analytics_bucket, settings.raw_prefix, settings.fallback_prefix),
        lambda: S3UsageEventFinder(
            settings.analytics_bucket,
            settings.raw_prefix,
            settings.fallback_prefix,
            client=analytics_s3(settings),
        ),
    )


def run_budget_repair(settings: Settings, now: datetime) -> dict[str, int]:
    """The scheduled budget repair, as of `now`; nothing to do where budgets are off."""
    if not settings.budgets_enabled:
        return {}
    report = repair_budgets(
        now, service=budget_service(settings), finder=usage_event_finder(settings)
    )
    return report.as_dict()
