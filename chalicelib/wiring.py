"""Composition root: the one place that builds clients, adapters and jobs; tests override them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from chalicelib.analytics import maintenance
from chalicelib.analytics.catalog import PartitionCatalog
from chalicelib.analytics.partitions import PartitionJobConfig, Progress
from chalicelib.analytics.state import CurationStateStore, DynamoCurationStateStore
from chalicelib.api_limits import RequestLimiter
from chalicelib.bedrock import BedrockModel
from chalicelib.budgets.alerts import AlertPublisher, BudgetAlerts, SnsAlertPublisher
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.budgets.limits import month_key, previous_month_key
from chalicelib.budgets.plans import default_plan
from chalicelib.budgets.repair import UsageEventFinder, repair_budgets
from chalicelib.budgets.service import BudgetService, PlanCache
from chalicelib.budgets.store import BudgetStore
from chalicelib.chat import ChatLimits, ChatService
from chalicelib.deadlines import (
    BEDROCK_CONNECT_TIMEOUT_S,
    FIREHOSE_TIMEOUTS,
    S3_FALLBACK_TIMEOUTS,
    TIMEOUTS,
    MaxTokensPolicy,
)
from chalicelib.errors import BudgetStoreUnavailableError, ConfigurationError
from chalicelib.firehose import FirehoseWriter
from chalicelib.identity import IdTokenVerifier
from chalicelib.metrics import EmfCallMetrics
from chalicelib.model_profiles import BedrockProfileLookup, ProfileLookup, resolve_aliases
from chalicelib.pricing import PriceTable, load_price_table
from chalicelib.recorder import UsageRecorder
from chalicelib.refusals import RefusalAccounting, flush_refusals
from chalicelib.request_items import DynamoRequestItems
from chalicelib.settings import BOTOCORE_CLIENTS, ENGINE_DUCKDB, Settings

if TYPE_CHECKING:
    from chalicelib.analytics.engines import QueryEngine

T = TypeVar("T")

# Timeouts and retries per AWS service used on the request path (chalicelib.deadlines says
# why these values). Firehose and Bedrock retries are ours (resend of failed records within
# the deadline; transient model failures retried once if there is time), so botocore's are
# few. `total_max_attempts` counts calls; botocore's `max_attempts` would count retries.
_CLIENT_OPTIONS: dict[str, dict[str, Any]] = {
    service: {
        "connect_timeout": timeouts.connect_s,
        "read_timeout": timeouts.read_s,
        "retries": {"mode": "standard", "total_max_attempts": timeouts.attempts},
    }
    for service, timeouts in TIMEOUTS.items()
} | {
    "sns": {
        "connect_timeout": 2,
        "read_timeout": 5,
        "retries": {"mode": "standard", "total_max_attempts": 3},
    },
}
# Worker threads per container. Lambda runs one request at a time per container; a model
# call given up at its deadline may hold a model worker until its read timeout ends.
MODEL_WORKERS = 4
IO_WORKERS = 8

# Everything `override` can replace: the settings and each dependency built below.
OVERRIDABLE = frozenset(
    {
        "settings",
        "prices",
        "profile_lookup",
        "model",
        "recorder",
        "verifier",
        "analytics_session",
        "query_engine",
        "budget_store",
        "alert_publisher",
        "budget_clock",
        "usage_event_finder",
        "call_metrics",
        "curation_state",
        "request_items",
    }
)


class _Container:
    """Builds each dependency once per process and stage configuration, on first use."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # builders nest (a recorder builds its clients)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._overrides: dict[str, Any] = {}

    def settings(self) -> Settings:
        override = self._overrides.get("settings")
        return override if override is not None else Settings.from_env()

    def override(self, dependencies: dict[str, Any]) -> None:
        unknown = sorted(set(dependencies) - OVERRIDABLE)
        if unknown:
            raise ValueError(
                f"cannot override {', '.join(unknown)}: "
                f"the names are {', '.join(sorted(OVERRIDABLE))}"
            )
        self._overrides.update(dependencies)

    def reset(self) -> None:
        with self._lock:
            self._overrides.clear()
            self._cache.clear()

    def get(self, name: str, settings: Settings | None, build: Callable[[], T]) -> T:
        """The overridden `name`, else the object built once for these settings."""
        if name not in OVERRIDABLE:
            raise ValueError(f"{name!r} is not a dependency name; add it to OVERRIDABLE")
        if name in self._overrides:
            return self._overrides[name]  # type: ignore[no-any-return]
        return self.cached((name, settings), build)

    def cached(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]  # type: ignore[no-any-return]


_container = _Container()


def current_settings() -> Settings:
    """Settings for the request or job that is running now (read from the environment)."""
    return _container.settings()


def override(**dependencies: Any) -> None:
    """Replace named dependencies (tests, benchmarks); unknown names are a ValueError."""
    _container.override(dependencies)


def reset() -> None:
    """Forget overrides and every cached object."""
    _container.reset()


# -- AWS ----------------------------------------------------------------------------------


def session(settings: Settings) -> Any:
    """A new boto3 session for the stage: AWS with the runtime's credentials, or the local
    stack's endpoint (`AWS_ENDPOINT_URL`) with dummy credentials."""
    from chalicelib.sessions import session_for

    return session_for(settings)


def client(service: str, settings: Settings, **options: Any) -> Any:
    """A boto3 client for `service` as the stage reaches it (thread-safe once built)."""

    def build() -> Any:
        from botocore.config import Config

        config = Config(**{**_CLIENT_OPTIONS.get(service, {}), **options})
        # A session of its own: boto3 sessions are not thread-safe, clients are.
        return session(settings).client(service, config=config)

    return _container.cached(("client", service, settings, repr(sorted(options.items()))), build)


def request_client(service: str, settings: Settings) -> Any:
    """A DynamoDB or Firehose client for the request path: the lean JSON-protocol client
    (chalicelib.aws_json, about a fifth of botocore's CPU per call), or a boto3 client
    where REQUEST_PATH_AWS_CLIENT=botocore (moto's in-process mock sees only boto3's)."""
    if settings.request_path_aws_client == BOTOCORE_CLIENTS:
        return client(service, settings)

    def build() -> Any:
        from chalicelib.aws_json import APIS, LeanJsonClient

        boto = client(service, settings)  # endpoint and region, as botocore resolves them
        timeouts = TIMEOUTS[service]
        return LeanJsonClient(
            APIS[service],
            endpoint_url=boto.meta.endpoint_url,
            region=boto.meta.region_name,
            credentials=session(settings).get_credentials(),
            connect_timeout_s=timeouts.connect_s,
            read_timeout_s=timeouts.read_s,
            max_attempts=timeouts.attempts,
        )

    return _container.cached(("lean", service, settings), build)


def model_executor() -> Executor:
    """Threads that run model calls, so a request can stop waiting at its deadline."""
    return _executor("model", MODEL_WORKERS)


def io_executor() -> Executor:
    """Threads for writes beside the durable usage write (settle, stored answer, index)."""
    return _executor("io", IO_WORKERS)


# One pool of each kind per process, kept across `reset()` (threads are not per stage).
_EXECUTORS: dict[str, ThreadPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def _executor(name: str, workers: int) -> Executor:
    with _EXECUTORS_LOCK:
        if name not in _EXECUTORS:
            _EXECUTORS[name] = ThreadPoolExecutor(workers, thread_name_prefix=name)
        return _EXECUTORS[name]


# -- chat ---------------------------------------------------------------------------------


def price_table(settings: Settings) -> PriceTable:
    """The current price table; every model the stage may call must be priced (checked now,
    not at billing).

    An application inference profile among them is resolved to its base model here, from
    MODEL_ALIASES or Bedrock's GetInferenceProfile: configuration time, once per process. A
    profile a request names resolves through these aliases only, never with a lookup.
    """

    def build() -> PriceTable:
        models = settings.stage_models
        aliases = resolve_aliases(
            models, dict(settings.model_aliases), lambda: profile_lookup(settings)
        )
        table = load_price_table().with_aliases(aliases)
        for model_id in models:
            table.price_of(model_id)
        return table

    return _container.get("prices", settings, build)


def profile_lookup(settings: Settings) -> ProfileLookup:
    """Bedrock's control plane, for application inference profiles (built only if needed)."""
    return _container.get(
        "profile_lookup", settings, lambda: BedrockProfileLookup(client("bedrock", settings))
    )


def model(settings: Settings) -> BedrockModel:
    """The Bedrock adapter."""

    def build() -> BedrockModel:
        # One attempt: the chat service retries transient failures itself, and only when the
        # request's deadline leaves time. The read timeout ends a call given up at its
        # deadline soon after, even though nobody waits for it any more.
        runtime = client(
            "bedrock-runtime",
            settings,
            connect_timeout=BEDROCK_CONNECT_TIMEOUT_S,
            read_timeout=settings.bedrock_read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        return BedrockModel(runtime)

    return _container.get("model", settings, build)


def recorder(settings: Settings) -> UsageRecorder:
    """Firehose first, then the fallback prefix in the analytics bucket."""

    def build() -> UsageRecorder:
        writer = FirehoseWriter(
            settings.firehose_stream_name,
            client=request_client("firehose", settings),
            max_attempts=settings.firehose_max_attempts,
            attempt_s=FIREHOSE_TIMEOUTS.attempt_s,
        )
        return UsageRecorder(
            writer,
            bucket=settings.analytics_bucket,
            fallback_prefix=settings.fallback_prefix,
            s3_client=client("s3", settings),
            fallback_reserve_s=S3_FALLBACK_TIMEOUTS.worst_s,
        )

    return _container.get("recorder", settings, build)


def verifier(settings: Settings) -> IdTokenVerifier:
    """Checks ID tokens in the app (local stage); caches the pool's signing keys."""
    return _container.get(
        "verifier",
        settings,
        lambda: IdTokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.user_pool_client_id,
            jwks_url=settings.resolved_jwks_url,
        ),
    )


def call_metrics(settings: Settings) -> EmfCallMetrics:
    """One Embedded Metric Format line per model call, on stdout (CloudWatch Logs on Lambda)."""
    return _container.get(
        "call_metrics", settings, lambda: EmfCallMetrics(models=settings.stage_models)
    )


def chat_service(settings: Settings) -> ChatService:
    """The chat use case, wired to the stage's model, recorder, prices, stores and metrics."""
    model_port = model(settings)
    usage = recorder(settings)
    prices = price_table(settings)
    budget = budget_service(settings) if settings.budgets_enabled else None
    keys = request_items(settings) if settings.plans_table else None
    metrics = call_metrics(settings)

    def build() -> ChatService:
        refusals = None
        if budget is not None:
            refusals = RefusalAccounting(
                counter=request_items(settings),
                recorder=usage,
                events_per_minute=settings.refusal_events_per_minute,
                stage=settings.stage,
                index=budget.index,
            )
        return ChatService(
            model=model_port,
            recorder=usage,
            prices=prices,
            model_id=settings.model_id,
            stage=settings.stage,
            max_tokens=max_tokens_policy(settings),
            budget=budget,
            metrics=metrics,
            refusals=refusals,
            keys=keys,
            model_executor=model_executor(),
            model_timeout_s=BEDROCK_CONNECT_TIMEOUT_S + settings.bedrock_read_timeout_s,
            io_executor=io_executor(),
        )

    # Built once per container and set of dependencies (tests replace dependencies).
    key = (
        "chat_service",
        settings,
        id(model_port),
        id(usage),
        id(prices),
        id(budget),
        id(keys),
        id(metrics),
    )
    return _container.cached(key, build)


def chat_limits(settings: Settings) -> ChatLimits:
    """The stage's limits on a chat request body (the chat service caps max_tokens further
    for the model called: max_tokens_policy)."""
    return _container.cached(
        ("chat_limits", settings),
        lambda: ChatLimits(
            max_prompt_chars=settings.max_prompt_chars,
            max_tokens_limit=settings.max_tokens_limit,
            max_messages=settings.max_messages,
        ),
    )


def max_tokens_policy(settings: Settings) -> MaxTokensPolicy:
    """The stage's max_tokens default and limit, capped per model so that a normal call fits
    the request's deadline (chalicelib.deadlines.max_tokens_within)."""
    return MaxTokensPolicy(
        default=settings.default_max_tokens,
        limit=settings.max_tokens_limit,
        deadline_s=settings.request_deadline_s,
    )


def request_limiter(settings: Settings) -> RequestLimiter | None:
    """Per-tenant rate windows of the usage queries, in the plans table; None (no limit)
    on a stage without one."""
    return request_items(settings) if settings.plans_table else None


def request_items(settings: Settings) -> DynamoRequestItems:
    """Idempotency keys, refusal counters and API rate windows in the plans table."""
    if not settings.plans_table:
        raise ConfigurationError("PLANS_TABLE must be set where keys and counters are used")
    return _container.get(
        "request_items",
        settings,
        lambda: DynamoRequestItems(
            settings.plans_table, client=request_client("dynamodb", settings)
        ),
    )


# -- analytics ----------------------------------------------------------------------------


def analytics_s3(settings: Settings) -> Any:
    """S3 for the partition job and the local query engine: longer reads, more retries."""
    return client(
        "s3", settings, read_timeout=60, retries={"mode": "standard", "total_max_attempts": 5}
    )


def analytics_session(settings: Settings) -> Any:
    """The boto3 session awswrangler builds its Athena, Glue and S3 clients from."""
    return _container.get("analytics_session", settings, lambda: session(settings))


def query_engine(settings: Settings) -> QueryEngine:
    """Where usage SQL runs: Athena in the stage's workgroup, or DuckDB over the curated
    Parquet (`QUERY_ENGINE=duckdb`, the local stack)."""

    def build() -> QueryEngine:
        from chalicelib.analytics.engines import AthenaEngine, DuckDBEngine
        from chalicelib.analytics.queries import USAGE_TABLE

        if settings.glue_table != USAGE_TABLE:
            raise ConfigurationError(f"GLUE_TABLE must be {USAGE_TABLE!r}: the queries name it")
        if settings.query_engine == ENGINE_DUCKDB:
            return DuckDBEngine(
                s3=analytics_s3(settings),
                catalog=partition_catalog(settings),
                database=settings.glue_database,
                table=settings.glue_table,
            )
        return AthenaEngine(
            database=settings.glue_database,
            workgroup=settings.athena_workgroup,
            boto3_session=analytics_session(settings),
        )

    return _container.get("query_engine", settings, build)


def partition_catalog(settings: Settings) -> PartitionCatalog:
    """The curated table's Glue partitions (where each day's current generation is)."""
    return PartitionCatalog(
        settings.glue_database, settings.glue_table, client=client("glue", settings)
    )


def curation_state(settings: Settings) -> CurationStateStore:
    """Each curated day's committed generation and lease (the curation table)."""

    def build() -> CurationStateStore:
        if not settings.curation_table:
            raise ConfigurationError("CURATION_TABLE must be set where usage is curated")
        return DynamoCurationStateStore(
            settings.curation_table, client=client("dynamodb", settings)
        )

    return _container.get("curation_state", settings, build)


def run_partition_maintenance(
    settings: Settings,
    now: datetime,
    days_back: Iterable[int],
    *,
    force: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
    keep_going: bool = True,
    wait_s: float = 0.0,
) -> dict[str, Any]:
    """Partition maintenance with the stage's clients, for the days `days_back` from `now`
    (the schedules, the local job loop, `meterctl backfill`); see `maintenance.run`."""
    return maintenance.run(
        PartitionJobConfig.from_settings(settings),
        now,
        days_back,
        s3=analytics_s3(settings),
        catalog=partition_catalog(settings),
        state=curation_state(settings),
        force=force,
        allow_shrink=allow_shrink,
        progress=progress,
        keep_going=keep_going,
        wait_s=wait_s,
    )


# -- budgets ------------------------------------------------------------------------------


def budget_store(settings: Settings) -> BudgetStore:
    """Plans and counters in the plans table."""
    if not settings.plans_table:
        raise ConfigurationError("PLANS_TABLE must be set where budgets or plans are used")
    return _container.get(
        "budget_store",
        settings,
        lambda: DynamoBudgetStore(
            settings.plans_table, client=request_client("dynamodb", settings)
        ),
    )


def alert_publisher(settings: Settings) -> AlertPublisher:
    """The budget-alerts topic."""
    return _container.get(
        "alert_publisher",
        settings,
        lambda: SnsAlertPublisher(settings.alerts_topic_arn, client=client("sns", settings)),
    )


def budget_clock() -> Callable[[], datetime]:
    """The budget's wall clock (UTC); tests override it to cross minutes and months."""
    return _container.get("budget_clock", None, lambda: _utc_now)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def plan_cache(settings: Settings) -> PlanCache:
    """Plans read on the request path, kept in the container for PLAN_CACHE_TTL_S."""
    return _container.cached(("plan_cache", settings), lambda: PlanCache(settings.plan_cache_ttl_s))


def budget_service(settings: Settings) -> BudgetService:
    """Plans, reservations and alerts for the stage (alerts only if a topic is configured)."""
    store = budget_store(settings)
    clock = budget_clock()
    publisher = alert_publisher(settings) if settings.alerts_topic_arn else None

    def build() -> BudgetService:
        alerts = None
        if publisher is not None:
            alerts = BudgetAlerts(store, publisher, now=clock)
        return BudgetService(
            store=store,
            prices=price_table(settings),
            default_plan=default_plan(
                settings.default_monthly_budget_usd,
                settings.default_tokens_per_minute,
                settings.default_requests_per_minute,
                settings.model_id,
            ),
            offered_models=settings.stage_models,
            alerts=alerts,
            reservation_ttl_s=settings.reservation_ttl_s,
            default_max_tokens=settings.default_max_tokens,
            now=clock,
            plan_cache=plan_cache(settings),
            background=io_executor().submit,
        )

    # One per container (it remembers which months it indexed); tests replace its parts.
    key = ("budget_service", settings, id(store), id(clock), id(publisher))
    return _container.cached(key, build)


def usage_event_finder(settings: Settings) -> UsageEventFinder:
    """Finds usage events by id for the budget repair: fallback, the curated generation's row
    groups, then the raw objects not curated yet (a day never curated: raw only)."""

    def build() -> UsageEventFinder:
        from chalicelib.analytics.lookup import CuratedEventFinder
        from chalicelib.layout import BucketLayout

        return CuratedEventFinder(
            bucket=settings.analytics_bucket,
            layout=BucketLayout(
                raw_prefix=settings.raw_prefix,
                fallback_prefix=settings.fallback_prefix,
                curated_prefix=settings.curated_prefix,
            ),
            s3=analytics_s3(settings),
            state=curation_state(settings) if settings.curation_table else None,
        )

    return _container.get("usage_event_finder", settings, build)


def run_budget_repair(settings: Settings, now: datetime) -> dict[str, int]:
    """The scheduled budget maintenance, as of `now`: expired reservations and missed alerts
    (repair_budgets), then the aggregates of refused requests of closed minutes
    (flush_refusals). Nothing to do where budgets are off."""
    if not settings.budgets_enabled:
        return {}
    service = budget_service(settings)
    report = repair_budgets(now, service=service, finder=usage_event_finder(settings))
    return {**report.as_dict(), **run_refusal_flush(settings, now, service)}


def run_refusal_flush(
    settings: Settings, now: datetime, service: BudgetService | None = None
) -> dict[str, int]:
    """Write the refusal aggregates of this month's and last month's active tenants."""
    service = service or budget_service(settings)
    tenants: set[str] = set()
    for month in (month_key(now), previous_month_key(now)):
        try:
            tenants.update(service.store.month_tenants(month))
        except BudgetStoreUnavailableError:
            return {"refusal_flush_errors": 1}
    report = flush_refusals(
        now,
        tenants=sorted(tenants),
        counter=request_items(settings),
        recorder=recorder(settings),
        events_per_minute=settings.refusal_events_per_minute,
        stage=settings.stage,
    )
    return {
        "refusal_minutes": report.minutes,
        "refusal_aggregates": report.aggregates,
        "refused_requests_folded": report.folded_requests,
        "refusal_flush_errors": report.errors,
    }
