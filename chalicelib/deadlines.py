"""Deadlines on the chat path: how long a call has, and how that time is shared by its stages.

API Gateway gives up on a request after 29 s. A call must be answered before then, and its
usage event must be durable before it is answered, so the model gets what is left after
keeping back enough time to record the event even when Firehose fails and the S3 fallback is
needed:

    handler start ........ model must finish ........ record by ...... answer by ... deadline
                 auth, claim, reserve   |  RECORD_RESERVE_S  |  ANSWER_MARGIN_S  |

Every AWS call on the path has fixed timeouts and attempts (TIMEOUTS); the record reserve is
the worst case of one Firehose attempt followed by the whole S3 fallback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# API Gateway's integration timeout for REST APIs (not raisable for a regional endpoint).
API_GATEWAY_TIMEOUT_S = 29
# Kept back at the end for returning the answer through Lambda and API Gateway.
ANSWER_MARGIN_S = 0.5
# Backoff between attempts of one call is at most this (jittered; chalicelib.aws_json).
BACKOFF_ALLOWANCE_S = 0.1
# The model is not called with less time than this left for it: it could not answer.
MIN_MODEL_WINDOW_S = 1.0
# A failed model attempt is retried only if this much of its window is left.
MODEL_RETRY_MIN_WINDOW_S = 5.0
# Time from handler start to the model call that max_tokens limits allow for (token check,
# idempotency claim, budget reserve: single-digit milliseconds each when healthy).
PRE_MODEL_ALLOWANCE_S = 1.0
# Time to the first output token, allowed for on top of generation.
FIRST_TOKEN_ALLOWANCE_S = 1.0


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts and attempts of one AWS dependency on the chat path."""

    connect_s: float
    read_s: float
    attempts: int

    @property
    def attempt_s(self) -> float:
        """The longest one attempt can take."""
        return self.connect_s + self.read_s

    @property
    def worst_s(self) -> float:
        """The longest the call can take, every attempt timing out."""
        return self.attempts * self.attempt_s + (self.attempts - 1) * BACKOFF_ALLOWANCE_S


# In-region DynamoDB, Firehose and S3 answer small requests in milliseconds; a second is far
# past their normal latency, so an attempt that takes longer is better retried or given up.
DYNAMODB_TIMEOUTS = Timeouts(connect_s=0.5, read_s=1.0, attempts=3)
# One PutRecordBatch per call: FirehoseWriter resends the records Firehose did not accept,
# for as long as the record reserve allows, then the S3 fallback is used.
FIREHOSE_TIMEOUTS = Timeouts(connect_s=0.5, read_s=1.0, attempts=1)
S3_FALLBACK_TIMEOUTS = Timeouts(connect_s=0.5, read_s=1.0, attempts=2)
BEDROCK_CONNECT_TIMEOUT_S = 1.0
TIMEOUTS: Mapping[str, Timeouts] = {
    "dynamodb": DYNAMODB_TIMEOUTS,
    "firehose": FIREHOSE_TIMEOUTS,
    "s3": S3_FALLBACK_TIMEOUTS,
}
# After the model: one Firehose attempt, then the whole S3 fallback (4.6 s).
RECORD_RESERVE_S = FIREHOSE_TIMEOUTS.attempt_s + S3_FALLBACK_TIMEOUTS.worst_s


class Deadline:
    """When one request must be answered, on the monotonic clock, and its stages' limits."""

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.at = at
        self._clock = clock

    @classmethod
    def start(
        cls,
        budget_s: float,
        lambda_remaining_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Deadline:
        """From now: the stage's budget, or what Lambda has left if that is less."""
        seconds = budget_s
        if lambda_remaining_ms is not None:
            seconds = min(seconds, lambda_remaining_ms / 1000)
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.at - self._clock()

    @property
    def answer_by(self) -> float:
        """When the handler must return its answer (monotonic)."""
        return self.at - ANSWER_MARGIN_S

    @property
    def model_by(self) -> float:
        """When the model must have answered, leaving the record reserve (monotonic)."""
        return self.answer_by - RECORD_RESERVE_S

    def seconds_until(self, moment: float) -> float:
        """Seconds from now until `moment` on this deadline's clock (negative once past)."""
        return moment - self._clock()

    def wall_time(self, wall_now: Callable[[], float] = time.time) -> float:
        """The deadline as epoch seconds (for records other processes read, like leases)."""
        return wall_now() + self.remaining()


# Output speed to plan max_tokens limits with, in tokens per second: the slow end of
# on-demand throughput (roughly half of typically reported medians), because a limit must
# hold on a slow day, not an average one. Planning figures: measure on your account and
# region (bench.chat_latency against Bedrock) and adjust. Base model ids, as priced.
PLANNING_OUTPUT_TOKENS_PER_S: Mapping[str, int] = {
    "anthropic.claude-3-haiku-20240307-v1:0": 80,
    "anthropic.claude-3-sonnet-20240229-v1:0": 40,
    "anthropic.claude-3-opus-20240229-v1:0": 20,
    "anthropic.claude-3-5-haiku-20241022-v1:0": 50,
    "anthropic.claude-3-5-sonnet-20240620-v1:0": 40,
    "anthropic.claude-3-5-sonnet-20241022-v2:0": 40,
    "anthropic.claude-3-7-sonnet-20250219-v1:0": 40,
    "anthropic.claude-sonnet-4-20250514-v1:0": 40,
    "anthropic.claude-opus-4-20250514-v1:0": 20,
    "anthropic.claude-sonnet-4-5-20250929-v1:0": 40,
    "anthropic.claude-haiku-4-5-20251001-v1:0": 80,
    "amazon.nova-micro-v1:0": 150,
    "amazon.nova-lite-v1:0": 120,
    "amazon.nova-pro-v1:0": 60,
    "meta.llama3-8b-instruct-v1:0": 80,
    "meta.llama3-70b-instruct-v1:0": 30,
    "meta.llama3-1-8b-instruct-v1:0": 80,
    "meta.llama3-1-70b-instruct-v1:0": 30,
    "meta.llama3-2-1b-instruct-v1:0": 150,
    "meta.llama3-2-3b-instruct-v1:0": 120,
    "meta.llama3-3-70b-instruct-v1:0": 30,
}
# For a model not in the table.
DEFAULT_PLANNING_OUTPUT_TOKENS_PER_S = 20
# Limits are rounded down to a multiple of this.
MAX_TOKENS_STEP = 128


def model_window_s(deadline_s: float) -> float:
    """The generation time a call can count on when it starts normally."""
    return (
        deadline_s
        - ANSWER_MARGIN_S
        - RECORD_RESERVE_S
        - PRE_MODEL_ALLOWANCE_S
        - FIRST_TOKEN_ALLOWANCE_S
    )


def max_tokens_within(base_model_id: str, deadline_s: float) -> int:
    """The largest max_tokens whose generation fits the stage's window at planning speed."""
    rate = PLANNING_OUTPUT_TOKENS_PER_S.get(base_model_id, DEFAULT_PLANNING_OUTPUT_TOKENS_PER_S)
    tokens = math.floor(model_window_s(deadline_s) * rate)
    return max(MAX_TOKENS_STEP, tokens // MAX_TOKENS_STEP * MAX_TOKENS_STEP)


@dataclass(frozen=True)
class MaxTokensPolicy:
    """A stage's max_tokens default and limit, and each model's cap on top of them.

    The stage's values (DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT) bound every call; the model's
    cap (`max_tokens_within`) keeps a generation of that length inside the request's deadline
    at the model's planning speed, so a slow model gets a lower limit than a fast one.
    """

    default: int
    limit: int
    deadline_s: float

    def limit_for(self, base_model_id: str) -> int:
        """The largest max_tokens a call to this model may ask for."""
        return min(self.limit, max_tokens_within(base_model_id, self.deadline_s))

    def default_for(self, base_model_id: str) -> int:
        """max_tokens for a call to this model that does not say."""
        return min(self.default, self.limit_for(base_model_id))
