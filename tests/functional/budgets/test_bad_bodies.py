"""Any chat or plan body, however malformed, gets an answer below 500 and leaves nothing behind.

Property-based (Hypothesis) over raw bytes, JSON-looking text and JSON documents with
surprising values (lone surrogates, NaN, huge numbers, deep nesting, duplicate keys), through
the Chalice test client with budgets on.
"""

from __future__ import annotations

import json
from typing import Any

from chalice.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import wiring
from chalicelib.bedrock import ModelReply
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.conversation import Conversation
from chalicelib.usage import TokenUsage
from tests.functional.budgets.conftest import PLANS_TABLE, BudgetEnv, admin_auth
from tests.functional.conftest import auth, stored_events

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.text(alphabet=st.one_of(st.characters(codec="utf-8"), LONE_SURROGATES), max_size=20)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
NASTY_TEXT = st.sampled_from(
    [
        "[" * 100_000,
        '{"prompt": ' * 50_000,
        '{"prompt": "\\ud800"}',
        '{"prompt": "hi", "prompt": "again"}',
        '{"prompt": "hi", "max_tokens": NaN}',
        '{"prompt": "hi", "max_tokens": 1e999}',
        '{"prompt": "hi", "max_tokens": ' + "9" * 5000 + "}",
        '{"monthly_budget_usd": "1e999999999", "tokens_per_minute": 1, "requests_per_minute": 1}',
        '{"monthly_budget_usd": "NaN", "tokens_per_minute": 1, "requests_per_minute": 1}',
        '{"monthly_budget_usd": "1", "tokens_per_minute": 1e2, "requests_per_minute": -0}',
    ]
)


def _documents(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """JSON objects with the expected fields (each maybe absent or of any type), serialized
    as json.dumps would (so NaN, Infinity and lone surrogates appear as Python writes them)."""
    body = st.fixed_dictionaries({}, optional={**fields, "extra": JSON_VALUES})
    return st.one_of(body, JSON_VALUES).map(lambda value: json.dumps(value).encode())


ROLES = st.one_of(st.sampled_from(["user", "assistant", "system", "User"]), JSON_VALUES)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES, "content": st.one_of(TEXT, JSON_VALUES)}, optional={"name": JSON_VALUES}
)
# Conversations that follow the rules (user first and last, alternating), with any text.
WELL_FORMED = st.integers(0, 3).flatmap(
    lambda pairs: st.lists(TEXT, min_size=2 * pairs + 1, max_size=2 * pairs + 1).map(
        lambda texts: [
            {"role": "user" if n % 2 == 0 else "assistant", "content": text}
            for n, text in enumerate(texts)
        ]
    )
)
MODELS = st.one_of(
    st.sampled_from(
        [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "us.anthropic.claude-3-haiku-20240307-v1:0",
            "amazon.nova-micro-v1:0",
            "acme.mystery-model-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x",
        ]
    ),
    TEXT,
    JSON_VALUES,
)
CHAT_BODIES = st.one_of(
    st.binary(max_size=64),
    NASTY_TEXT.map(str.encode),
    _documents(
        {
            "prompt": st.one_of(TEXT, JSON_VALUES),
            "messages": st.one_of(WELL_FORMED, st.lists(MESSAGE, max_size=4), JSON_VALUES),
            "system": st.one_of(TEXT, JSON_VALUES),
            "model": MODELS,
            "max_tokens": st.one_of(st.integers(-5, 300), JSON_VALUES),
        }
    ),
)
PLAN_BODIES = st.one_of(
    st.binary(max_size=64),
    NASTY_TEXT.map(str.encode),
    _documents(
        {
            "monthly_budget_usd": st.one_of(
                st.decimals(allow_nan=True).map(str), TEXT, JSON_VALUES
            ),
            "tokens_per_minute": st.one_of(st.integers(-5, 10**12), JSON_VALUES),
            "requests_per_minute": st.one_of(st.integers(-5, 10**12), JSON_VALUES),
            "allowed_models": st.one_of(
                st.lists(st.sampled_from(["anthropic.claude-3-haiku-20240307-v1:0", "x"])),
                JSON_VALUES,
            ),
        }
    ),
)


class InstantModel:
    def converse(
        self, model_id: str, conversation: Conversation, max_tokens: int, **_: Any
    ) -> ModelReply:
        return ModelReply("ok", TokenUsage(3, 2, total_tokens=5), "end_turn")


def test_no_chat_body_produces_a_5xx_or_leaves_a_reservation(
    client: Client, budget_env: BudgetEnv
) -> None:
    wiring.override(model=InstantModel())
    headers = auth()
    statuses: set[int] = set()

    @EXAMPLES
    @given(body=CHAT_BODIES)
    def one(body: bytes) -> None:
        response = client.http.post("/bedrock/chat", headers=headers, body=body)
        assert response.status_code < 500, (body[:200], response.body)
        statuses.add(response.status_code)
        if response.status_code == 400:
            assert response.json_body["Message"]
            # No usage event for bad input; a well-formed model id without a price is a
            # refusal, recorded.
            refused_model = response.json_body["Message"].startswith("Unknown model")
            assert ("X-Request-Id" in response.headers) == refused_model

    one()
    assert 400 in statuses
    month = DynamoBudgetStore(PLANS_TABLE).get_month("tenant-a", "2026-11")
    assert month.open_reservations == 0
    assert month.reserved_usd == 0
    for event in stored_events():
        assert event["status"] == "ok" or (event["status"], event["error_code"]) in (
            ("rejected", "ModelNotPriced"),
            ("rejected", "ModelNotAllowed"),
        )


def test_no_plan_body_produces_a_5xx(client: Client, budget_env: BudgetEnv) -> None:
    headers = admin_auth()

    @EXAMPLES
    @given(body=PLAN_BODIES)
    def one(body: bytes) -> None:
        response = client.http.put("/admin/tenants/tenant-a/plan", headers=headers, body=body)
        assert response.status_code < 500, (body[:200], response.body)
        if response.status_code == 400:
            assert response.json_body["Message"]

    one()
