"""Who is calling: the tenant and user, from verified Cognito ID-token claims only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.errors import (
    AuthenticationError,
    ForbiddenError,
    IdentityProviderUnavailableError,
)

TENANT_CLAIM = "custom:tenant_id"
GROUPS_CLAIM = "cognito:groups"
USERNAME_CLAIM = "cognito:username"
ALLOWED_ALGORITHMS = ["RS256"]
MAX_TENANT_ID_LENGTH = 128

MISSING_TOKEN = "Missing bearer token in the Authorization header."  # noqa: S105
INVALID_TOKEN = "The token is not a valid, unexpired ID token for this API."  # noqa: S105
NO_TENANT = "The token carries no tenant; ask your administrator to assign one."


@dataclass(frozen=True)
class Caller:
    """A verified caller."""

    tenant_id: str
    user_id: str
    username: str
    groups: frozenset[str]

    def is_member(self, group: str) -> bool:
        return group in self.groups


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """Build a Caller from claims that have already been verified.

    The tenant comes from `custom:tenant_id` and nowhere else.
    """
    tenant_id = claims.get(TENANT_CLAIM)
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ForbiddenError(NO_TENANT)
    if len(tenant_id) > MAX_TENANT_ID_LENGTH:
        raise ForbiddenError(NO_TENANT)
    user_id = str(claims.get("sub", ""))
    if not user_id:
        raise AuthenticationError(INVALID_TOKEN)
    return Caller(
        tenant_id=tenant_id,
        user_id=user_id,
        username=str(claims.get(USERNAME_CLAIM, "")),
        groups=parse_groups(claims.get(GROUPS_CLAIM)),
    )


def parse_groups(value: Any) -> frozenset[str]:
    """Cognito groups arrive as a list in the token, as a string from API Gateway's authorizer.

    API Gateway (REST) renders lists as "[a, b]" or "a,b"; both are accepted.
    """
    if value is None:
        return frozenset()
    if isinstance(value, list | tuple):
        return frozenset(str(group) for group in value)
    text = str(value).strip().removeprefix("[").removesuffix("]")
    return frozenset(part.strip() for part in text.replace(",", " ").split() if part.strip())


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token from `Authorization: Bearer <token>` (API Gateway also accepts a bare token)."""
    raw = ""
    for name, value in headers.items():
        if name.lower() == "authorization":
            raw = value.strip()
            break
    if not raw:
        raise AuthenticationError(MISSING_TOKEN)
    scheme, _, rest = raw.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else raw
    if not token:
        raise AuthenticationError(MISSING_TOKEN)
    return token


class SigningKeys(Protocol):
    """Finds the public key that signed a token (PyJWT's PyJWKClient fits)."""

    def get_signing_key_from_jwt(self, token: str) -> Any: ...


class IdTokenVerifier:
    """Verifies a Cognito ID token: RS256 signature, issuer, audience, token_use, expiry."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        keys: SigningKeys | None = None,
        leeway_s: int = 0,
    ) -> None:
        import jwt

        self._jwt = jwt
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._keys: SigningKeys = keys or jwt.PyJWKClient(
            jwks_url, cache_keys=True, lifespan=3600, timeout=5
        )

    def verify(self, token: str) -> dict[str, Any]:
        """Return the token's claims, or raise AuthenticationError."""
        jwt = self._jwt
        try:
            signing_key = self._keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise IdentityProviderUnavailableError(
                "The identity provider is unavailable; please retry."
            ) from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AuthenticationError(INVALID_TOKEN) from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=signing_key.key,
                algorithms=ALLOWED_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub", "token_use"]},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(INVALID_TOKEN) from exc
        if claims.get("token_use") != "id":
            raise AuthenticationError(INVALID_TOKEN)
        return claims
