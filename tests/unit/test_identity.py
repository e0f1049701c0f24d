"""ID-token verification and the tenant claim: every bad token is a 401, no tenant a 403."""

from __future__ import annotations

import time

import pytest

from chalicelib.errors import AuthenticationError, ForbiddenError
from chalicelib.identity import IdTokenVerifier, bearer_token, caller_from_claims, parse_groups
from tests.support.tokens import CLIENT_ID, ISSUER, TokenFactory

tokens = TokenFactory()


def verifier() -> IdTokenVerifier:
    return IdTokenVerifier(issuer=ISSUER, audience=CLIENT_ID, keys=tokens.keys)


def test_valid_id_token_yields_its_tenant() -> None:
    claims = verifier().verify(tokens.id_token("tenant-a"))
    caller = caller_from_claims(claims)
    assert caller.tenant_id == "tenant-a"
    assert caller.user_id == "user-tenant-a"


@pytest.mark.parametrize(
    ("case", "token"),
    [
        (
            "expired",
            lambda: tokens.id_token(exp=int(time.time()) - 10, iat=int(time.time()) - 4000),
        ),
        ("wrong audience", lambda: tokens.id_token(aud="another-client")),
        (
            "wrong issuer",
            lambda: tokens.id_token(iss="https://cognito-idp.us-east-1.amazonaws.com/other"),
        ),
        (
            "access token",
            lambda: tokens.id_token(token_use="access", aud=None, client_id=CLIENT_ID),
        ),
        ("token_use id missing", lambda: tokens.id_token(token_use=None)),
        ("bad signature", lambda: tokens.id_token(signer=tokens.other_private_key)),
        ("alg none", lambda: tokens.unsigned_token()),
        ("malformed", lambda: "not-a-jwt"),
        ("three junk parts", lambda: "aaa.bbb.ccc"),
        ("tampered payload", lambda: _tamper(tokens.id_token("tenant-a"))),
    ],
)
def test_bad_tokens_are_refused(case: str, token: object) -> None:
    with pytest.raises(AuthenticationError):
        verifier().verify(token())  # type: ignore[operator]


def _tamper(token: str) -> str:
    header, _, signature = token.split(".")
    forged = tokens.id_token("tenant-b").split(".")[1]
    return f"{header}.{forged}.{signature}"


def test_verified_token_without_tenant_is_forbidden() -> None:
    claims = verifier().verify(tokens.id_token(tenant_id=None))
    with pytest.raises(ForbiddenError):
        caller_from_claims(claims)


@pytest.mark.parametrize("tenant", ["", "   ", 42, "x" * 129])
def test_unusable_tenant_claims_are_forbidden(tenant: object) -> None:
    with pytest.raises(ForbiddenError):
        caller_from_claims({"sub": "u", "custom:tenant_id": tenant})


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Authorization": "Bearer abc.def.ghi"}, "abc.def.ghi"),
        ({"authorization": "bearer abc.def.ghi"}, "abc.def.ghi"),
        ({"Authorization": "abc.def.ghi"}, "abc.def.ghi"),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(
    headers: dict[str, str], token: str
) -> None:
    assert bearer_token(headers) == token


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer "}])
def test_missing_token_is_unauthenticated(headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationError):
        bearer_token(headers)


@pytest.mark.parametrize(
    ("value", "groups"),
    [
        (None, set()),
        (["admins", "ops"], {"admins", "ops"}),
        ("admins", {"admins"}),
        ("[admins, ops]", {"admins", "ops"}),
        ("admins,ops", {"admins", "ops"}),
    ],
)
def test_groups_claim_in_every_shape(value: object, groups: set[str]) -> None:
    assert parse_groups(value) == groups
