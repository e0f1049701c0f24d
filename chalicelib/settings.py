"""Runtime settings, read from the environment when a request or job runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from chalicelib.errors import ConfigurationError
from chalicelib.model_profiles import parse_aliases

# Every environment variable the app reads, in one place.
STAGE = "STAGE"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"  # the local stack's AWS endpoint; unset on AWS
AWS_ENDPOINT_URL_BEDROCK_RUNTIME = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"  # the local Bedrock stand-in
MODEL_ID = "MODEL_ID"
# Models tenants may choose besides MODEL_ID (comma-separated ids, as they are called); a
# tenant's plan picks among them. Also what the API's IAM role may invoke.
ALLOWED_MODELS = "ALLOWED_MODELS"
MAX_PROMPT_CHARS = "MAX_PROMPT_CHARS"  # characters of input text: prompt or messages, and system
MAX_MESSAGES = "MAX_MESSAGES"
DEFAULT_MAX_TOKENS = "DEFAULT_MAX_TOKENS"
MAX_TOKENS_LIMIT = "MAX_TOKENS_LIMIT"
BEDROCK_READ_TIMEOUT_S = "BEDROCK_READ_TIMEOUT_S"
REQUEST_DEADLINE_S = "REQUEST_DEADLINE_S"  # where no Lambda context says less (chalice local)
TOKEN_VERIFICATION = "TOKEN_VERIFICATION"  # noqa: S105 (a variable name, not a secret)
USER_POOL_ID = "USER_POOL_ID"
USER_POOL_ARN = "USER_POOL_ARN"
USER_POOL_CLIENT_ID = "USER_POOL_CLIENT_ID"
JWKS_URL = "JWKS_URL"
FIREHOSE_STREAM_NAME = "FIREHOSE_STREAM_NAME"
FIREHOSE_MAX_ATTEMPTS = "FIREHOSE_MAX_ATTEMPTS"
ANALYTICS_BUCKET = "ANALYTICS_BUCKET"
RAW_PREFIX = "RAW_PREFIX"
FALLBACK_PREFIX = "FALLBACK_PREFIX"
CURATED_PREFIX = "CURATED_PREFIX"
GLUE_DATABASE = "GLUE_DATABASE"
GLUE_TABLE = "GLUE_TABLE"
ATHENA_WORKGROUP = "ATHENA_WORKGROUP"
QUERY_ENGINE = "QUERY_ENGINE"
PLANS_TABLE = "PLANS_TABLE"
CURATION_TABLE = "CURATION_TABLE"  # each curated day's committed generation and lease
ALERTS_TOPIC_ARN = "ALERTS_TOPIC_ARN"
BUDGETS_ENABLED = "BUDGETS_ENABLED"
DEFAULT_MONTHLY_BUDGET_USD = "DEFAULT_MONTHLY_BUDGET_USD"
DEFAULT_TOKENS_PER_MINUTE = "DEFAULT_TOKENS_PER_MINUTE"
DEFAULT_REQUESTS_PER_MINUTE = "DEFAULT_REQUESTS_PER_MINUTE"
RESERVATION_TTL_S = "RESERVATION_TTL_S"
PLAN_CACHE_TTL_S = "PLAN_CACHE_TTL_S"
REFUSAL_EVENTS_PER_MINUTE = "REFUSAL_EVENTS_PER_MINUTE"
USAGE_REQUESTS_PER_MINUTE = "USAGE_REQUESTS_PER_MINUTE"
# "lean": DynamoDB and Firehose on the request path through chalicelib.aws_json; "botocore":
# through boto3 clients (what moto's in-process mock intercepts, for functional tests).
REQUEST_PATH_AWS_CLIENT = "REQUEST_PATH_AWS_CLIENT"
ADMIN_GROUP = "ADMIN_GROUP"
PARTITION_LATENESS_HOURS = "PARTITION_LATENESS_HOURS"
PARTITION_SWEEP_DAYS = "PARTITION_SWEEP_DAYS"
MODEL_ALIASES = "MODEL_ALIASES"  # JSON: application inference profile ARN -> model id

DEFAULT_MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"

# Stack output of analytics_infra/template.yaml -> the variable it provides. The one source of
# truth for the local stack, the deploy tooling and meterctl.
OUTPUT_TO_ENV: Mapping[str, str] = {
    "UserPoolId": USER_POOL_ID,
    "UserPoolArn": USER_POOL_ARN,
    "UserPoolClientId": USER_POOL_CLIENT_ID,
    "AnalyticsBucketName": ANALYTICS_BUCKET,
    "FirehoseStreamName": FIREHOSE_STREAM_NAME,
    "GlueDatabaseName": GLUE_DATABASE,
    "GlueTableName": GLUE_TABLE,
    "AthenaWorkGroupName": ATHENA_WORKGROUP,
    "PlansTableName": PLANS_TABLE,
    "CurationTableName": CURATION_TABLE,
    "AlertsTopicArn": ALERTS_TOPIC_ARN,
}

# How the tenant's identity is established.
#   "apigateway": API Gateway's Cognito authorizer verified the token; read its claims.
#   "app":        the app verifies the bearer ID token itself (chalice local does not).
# The default is "app": without configuration nothing is trusted unverified.
VERIFY_BY_APIGATEWAY = "apigateway"
VERIFY_IN_APP = "app"

# Which engine answers analytics SQL: Athena when deployed, DuckDB on the local stack.
ENGINE_ATHENA = "athena"
ENGINE_DUCKDB = "duckdb"

LEAN_CLIENTS = "lean"
BOTOCORE_CLIENTS = "botocore"


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to know about its stage."""

    stage: str
    region: str
    model_id: str
    max_prompt_chars: int
    default_max_tokens: int
    max_tokens_limit: int
    bedrock_read_timeout_s: int
    token_verification: str
    user_pool_id: str
    user_pool_arn: str
    user_pool_client_id: str
    jwks_url: str
    firehose_stream_name: str
    firehose_max_attempts: int
    analytics_bucket: str
    raw_prefix: str
    fallback_prefix: str
    curated_prefix: str
    glue_database: str
    glue_table: str
    athena_workgroup: str
    query_engine: str
    plans_table: str
    alerts_topic_arn: str
    budgets_enabled: bool
    default_monthly_budget_usd: str
    default_tokens_per_minute: int
    default_requests_per_minute: int
    reservation_ttl_s: int
    admin_group: str
    allowed_models: tuple[str, ...] = ()
    max_messages: int = 100
    partition_lateness_hours: int = 2
    partition_sweep_days: int = 7
    request_deadline_s: int = 29
    plan_cache_ttl_s: int = 60
    refusal_events_per_minute: int = 10
    usage_requests_per_minute: int = 30
    request_path_aws_client: str = LEAN_CLIENTS
    model_aliases: tuple[tuple[str, str], ...] = ()
    curation_table: str = ""
    # Set only on the local stack: clients go there, with dummy credentials (chalicelib.sessions).
    aws_endpoint_url: str = ""
    bedrock_endpoint_url: str = ""

    def __hash__(self) -> int:
        # Settings key the composer's caches, looked up a dozen times per request; the
        # generated hash of a frozen dataclass would hash every field each time.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, field.name) for field in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def stage_models(self) -> tuple[str, ...]:
        """The model ids the API may call, as they are called: MODEL_ID first, then, with
        budgets on, ALLOWED_MODELS (each tenant's plan allows some of them).

        With budgets off there is no plan to say who may use which model and no budget to
        cap what a dearer one costs, so only MODEL_ID is offered.
        """
        if not self.budgets_enabled:
            return (self.model_id,)
        return (self.model_id, *(m for m in self.allowed_models if m != self.model_id))

    @property
    def token_issuer(self) -> str:
        """The `iss` claim Cognito puts in this pool's tokens (also on the local stack)."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def resolved_jwks_url(self) -> str:
        """Where the pool's signing keys are published."""
        return self.jwks_url or f"{self.token_issuer}/.well-known/jwks.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, with the documented defaults."""
        env = os.environ if environ is None else environ
        region = env.get(AWS_REGION) or env.get(AWS_DEFAULT_REGION) or "us-east-1"
        settings = cls(
            stage=env.get(STAGE, "dev"),
            region=region,
            model_id=env.get(MODEL_ID, DEFAULT_MODEL_ID),
            allowed_models=parse_model_list(env.get(ALLOWED_MODELS, "")),
            max_prompt_chars=_int(env, MAX_PROMPT_CHARS, 20_000),
            max_messages=_int(env, MAX_MESSAGES, 100),
            default_max_tokens=_int(env, DEFAULT_MAX_TOKENS, 512),
            max_tokens_limit=_int(env, MAX_TOKENS_LIMIT, 4096),
            bedrock_read_timeout_s=_int(env, BEDROCK_READ_TIMEOUT_S, 22),
            token_verification=env.get(TOKEN_VERIFICATION, VERIFY_IN_APP),
            user_pool_id=env.get(USER_POOL_ID, ""),
            user_pool_arn=_user_pool_arn(env),
            user_pool_client_id=env.get(USER_POOL_CLIENT_ID, ""),
            jwks_url=env.get(JWKS_URL, ""),
            firehose_stream_name=env.get(FIREHOSE_STREAM_NAME, ""),
            firehose_max_attempts=_int(env, FIREHOSE_MAX_ATTEMPTS, 4),
            analytics_bucket=env.get(ANALYTICS_BUCKET, ""),
            raw_prefix=env.get(RAW_PREFIX, "raw/"),
            fallback_prefix=env.get(FALLBACK_PREFIX, "fallback/"),
            curated_prefix=env.get(CURATED_PREFIX, "usage/"),
            glue_database=env.get(GLUE_DATABASE, "bedrock_metering_db"),
            glue_table=env.get(GLUE_TABLE, "token_usage_logs"),
            athena_workgroup=env.get(ATHENA_WORKGROUP, "bedrock-metering-workgroup"),
            query_engine=env.get(QUERY_ENGINE, ENGINE_ATHENA),
            plans_table=env.get(PLANS_TABLE, ""),
            alerts_topic_arn=env.get(ALERTS_TOPIC_ARN, ""),
            budgets_enabled=env.get(BUDGETS_ENABLED, "true").lower() == "true",
            default_monthly_budget_usd=env.get(DEFAULT_MONTHLY_BUDGET_USD, "100"),
            default_tokens_per_minute=_int(env, DEFAULT_TOKENS_PER_MINUTE, 100_000),
            default_requests_per_minute=_int(env, DEFAULT_REQUESTS_PER_MINUTE, 60),
            reservation_ttl_s=_int(env, RESERVATION_TTL_S, 900),
            admin_group=env.get(ADMIN_GROUP, "admins"),
            partition_lateness_hours=_int(env, PARTITION_LATENESS_HOURS, 2),
            partition_sweep_days=_int(env, PARTITION_SWEEP_DAYS, 7),
            curation_table=env.get(CURATION_TABLE, ""),
            request_deadline_s=_int(env, REQUEST_DEADLINE_S, 29),
            plan_cache_ttl_s=_int(env, PLAN_CACHE_TTL_S, 60),
            refusal_events_per_minute=_int(env, REFUSAL_EVENTS_PER_MINUTE, 10),
            usage_requests_per_minute=_int(env, USAGE_REQUESTS_PER_MINUTE, 30),
            request_path_aws_client=env.get(REQUEST_PATH_AWS_CLIENT, LEAN_CLIENTS),
            model_aliases=parse_aliases(env.get(MODEL_ALIASES, ""), MODEL_ALIASES),
            aws_endpoint_url=env.get(AWS_ENDPOINT_URL, ""),
            bedrock_endpoint_url=env.get(AWS_ENDPOINT_URL_BEDROCK_RUNTIME, ""),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject settings that cannot work, naming the variable at fault."""
        if self.token_verification not in (VERIFY_BY_APIGATEWAY, VERIFY_IN_APP):
            raise ConfigurationError(
                f"{TOKEN_VERIFICATION} must be '{VERIFY_BY_APIGATEWAY}' or '{VERIFY_IN_APP}'"
            )
        if self.query_engine not in (ENGINE_ATHENA, ENGINE_DUCKDB):
            raise ConfigurationError(
                f"{QUERY_ENGINE} must be '{ENGINE_ATHENA}' or '{ENGINE_DUCKDB}'"
            )
        if not 1 <= self.default_max_tokens <= self.max_tokens_limit:
            raise ConfigurationError(
                f"{DEFAULT_MAX_TOKENS} must be between 1 and {MAX_TOKENS_LIMIT}"
            )
        if self.max_prompt_chars < 1:
            raise ConfigurationError(f"{MAX_PROMPT_CHARS} must be positive")
        if self.max_messages < 1:
            raise ConfigurationError(f"{MAX_MESSAGES} must be positive")
        if self.firehose_max_attempts < 1:
            raise ConfigurationError(f"{FIREHOSE_MAX_ATTEMPTS} must be at least 1")
        if not 0 <= self.partition_lateness_hours <= 48:
            raise ConfigurationError(f"{PARTITION_LATENESS_HOURS} must be between 0 and 48")
        if not 0 <= self.partition_sweep_days <= 62:
            raise ConfigurationError(f"{PARTITION_SWEEP_DAYS} must be between 0 and 62")
        self._validate_request_path()
        # A live request's reservation must never expire under it (the request ends by its
        # deadline, each model attempt by its read timeout; a minute covers the writes that
        # may land after the answer), or the repair job would finish it twice.
        longest = max(2 * self.bedrock_read_timeout_s, self.request_deadline_s)
        if self.reservation_ttl_s < longest + 60:
            raise ConfigurationError(
                f"{RESERVATION_TTL_S} must be at least 60 seconds more than "
                f"{REQUEST_DEADLINE_S} and than 2 x {BEDROCK_READ_TIMEOUT_S}"
            )

    def _validate_request_path(self) -> None:
        if not 1 <= self.request_deadline_s <= 900:
            raise ConfigurationError(f"{REQUEST_DEADLINE_S} must be between 1 and 900")
        if not 1 <= self.bedrock_read_timeout_s <= self.request_deadline_s:
            raise ConfigurationError(
                f"{BEDROCK_READ_TIMEOUT_S} must be between 1 and {REQUEST_DEADLINE_S}"
            )
        if not 0 <= self.plan_cache_ttl_s <= 60:
            raise ConfigurationError(f"{PLAN_CACHE_TTL_S} must be between 0 and 60")
        if self.refusal_events_per_minute < 0:
            raise ConfigurationError(f"{REFUSAL_EVENTS_PER_MINUTE} must not be negative")
        if self.usage_requests_per_minute < 1:
            raise ConfigurationError(f"{USAGE_REQUESTS_PER_MINUTE} must be at least 1")
        if self.request_path_aws_client not in (LEAN_CLIENTS, BOTOCORE_CLIENTS):
            raise ConfigurationError(
                f"{REQUEST_PATH_AWS_CLIENT} must be '{LEAN_CLIENTS}' or '{BOTOCORE_CLIENTS}'"
            )


def parse_model_list(text: str) -> tuple[str, ...]:
    """Model ids from a comma-separated list (blanks and repeats dropped, order kept)."""
    models: list[str] = []
    for item in text.split(","):
        model_id = item.strip()
        if model_id and model_id not in models:
            models.append(model_id)
    return tuple(models)


def env_from_outputs(outputs: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that a stack's outputs provide (those present)."""
    return {env: outputs[output] for output, env in OUTPUT_TO_ENV.items() if output in outputs}


def _user_pool_arn(env: Mapping[str, str]) -> str:
    return env.get(USER_POOL_ARN, "")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def route_authorizer_needed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether routes carry API Gateway's Cognito authorizer (read once, at import).

    This is the one setting read at import time: Chalice builds the API definition from
    the decorated routes, so the authorizer must be known when app.py loads.
    """
    env = os.environ if environ is None else environ
    return env.get(TOKEN_VERIFICATION, VERIFY_IN_APP) == VERIFY_BY_APIGATEWAY


def route_authorizer_pool_arn(environ: Mapping[str, str] | None = None) -> str | None:
    """The user pool whose Cognito authorizer every route carries, or None where the app
    verifies tokens itself (read at import, with `route_authorizer_needed`)."""
    env = os.environ if environ is None else environ
    if not route_authorizer_needed(env):
        return None
    pool_arn = _user_pool_arn(env)
    if not pool_arn:
        raise ConfigurationError(f"{USER_POOL_ARN} must be set for stages verified by API Gateway")
    return pool_arn
