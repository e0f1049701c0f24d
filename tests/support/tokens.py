"""Mint Cognito-shaped ID tokens with a key of our own, good and deliberately bad."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

REGION = "us-east-1"
POOL_ID = "us-east-1_TestPool1"
CLIENT_ID = "testclientid1234567890"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
KID = "test-key-1"


@dataclass
class _Key:
    key: Any


class StaticKeys:
    """A signing-key source that knows one key id, like a pool's JWKS with one key."""

    def __init__(self, public_key: Any, kid: str = KID) -> None:
        self._public_key = public_key
        self._kid = kid

    def get_signing_key_from_jwt(self, token: str) -> _Key:
        header = jwt.get_unverified_header(token)
        if header.get("kid") != self._kid:
            raise jwt.PyJWKClientError("Unable to find a signing key that matches")
        return _Key(self._public_key)


class TokenFactory:
    """Issues ID tokens as the test pool would."""

    @cached_property
    def private_key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @cached_property
    def other_private_key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def keys(self) -> StaticKeys:
        return StaticKeys(self.private_key.public_key())

    def claims(self, tenant_id: str | None = "tenant-a", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": f"user-{tenant_id}",
            "aud": CLIENT_ID,
            "iss": ISSUER,
            "token_use": "id",
            "cognito:username": f"alice-{tenant_id}",
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
        }
        if tenant_id is not None:
            claims["custom:tenant_id"] = tenant_id
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def id_token(
        self, tenant_id: str | None = "tenant-a", *, signer: Any = None, **overrides: Any
    ) -> str:
        return jwt.encode(
            self.claims(tenant_id, **overrides),
            signer or self.private_key,
            algorithm="RS256",
            headers={"kid": KID},
        )

    def unsigned_token(self, tenant_id: str = "tenant-a") -> str:
        """An `alg: none` token: a forgery any verifier must refuse."""

        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'kid': KID})}.{part(self.claims(tenant_id))}."
