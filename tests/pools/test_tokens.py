"""Service tokens in the store: secrets shown once, hashes kept, scopes and pools."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from promomail.pools.admin.tokens import (
    authenticate,
    create_token,
    list_tokens,
    permits,
    revoke_token,
)
from promomail.pools.choices import Scope
from promomail.pools.errors import PoolNotFound, TokenError, TokenNotFound
from tests.support.store_helpers import make_pool


def test_create_authenticate_revoke(engine: Engine) -> None:
    make_pool(engine, "spring")
    issued = create_token(engine, "checkout", Scope.REDEEM, ["spring", "spring"])
    assert issued.as_dict() == {
        "name": "checkout",
        "token": issued.token,
        "scope": "redeem",
        "pools": ["spring"],
    }
    holder = authenticate(engine, issued.token)
    assert holder is not None
    assert (holder.name, holder.scope, holder.pools) == (
        "checkout",
        Scope.REDEEM,
        frozenset({"spring"}),
    )
    assert holder.sees("spring") and not holder.sees("autumn")
    assert authenticate(engine, issued.token + "x") is None
    assert authenticate(engine, "not-even-a-token") is None
    [info] = list_tokens(engine)
    assert info.active and info.pools == ["spring"]
    revoked = revoke_token(engine, "checkout")
    assert not revoked.active
    assert revoke_token(engine, "checkout").revoked_at == revoked.revoked_at
    assert authenticate(engine, issued.token) is None


def test_only_the_hash_is_stored(engine: Engine) -> None:
    issued = create_token(engine, "admin-1", Scope.ADMIN)
    with engine.connect() as conn:
        stored = [tuple(row) for row in conn.execute(text("SELECT * FROM service_tokens"))]
    assert issued.token not in repr(stored)
    assert issued.token.startswith("pm_") and len(issued.token) > 40


def test_refusals_change_nothing(engine: Engine) -> None:
    create_token(engine, "taken", Scope.READ)
    with pytest.raises(TokenError, match="'taken' already exists"):
        create_token(engine, "taken", Scope.ADMIN)
    with pytest.raises(TokenError, match="not valid"):
        create_token(engine, "has space", Scope.READ)
    with pytest.raises(TokenError, match="not one of"):
        create_token(engine, "bad-scope", "root")
    with pytest.raises(PoolNotFound):
        create_token(engine, "no-pool", Scope.READ, ["nope"])
    with pytest.raises(TokenNotFound):
        revoke_token(engine, "nobody")
    assert [t.name for t in list_tokens(engine)] == ["taken"]


@pytest.mark.parametrize(
    ("held", "needed", "reading", "allowed"),
    [
        (Scope.ADMIN, Scope.ADMIN, False, True),
        (Scope.ADMIN, Scope.REDEEM, False, True),
        (Scope.READ, Scope.READ, True, True),
        (Scope.READ, Scope.REDEEM, True, True),
        (Scope.READ, Scope.REDEEM, False, False),
        (Scope.READ, Scope.ADMIN, False, False),
        (Scope.REDEEM, Scope.REDEEM, True, True),
        (Scope.REDEEM, Scope.REDEEM, False, True),
        (Scope.REDEEM, Scope.READ, True, False),
        (Scope.REDEEM, Scope.ADMIN, False, False),
        (Scope.ADMIN, Scope.EVENTS, False, True),
        (Scope.EVENTS, Scope.EVENTS, False, True),
        (Scope.EVENTS, Scope.READ, True, False),
        (Scope.EVENTS, Scope.REDEEM, True, False),
        (Scope.EVENTS, Scope.REDEEM, False, False),
        (Scope.EVENTS, Scope.ADMIN, False, False),
        (Scope.READ, Scope.EVENTS, False, False),
        (Scope.REDEEM, Scope.EVENTS, False, False),
    ],
)
def test_permits(held: Scope, needed: Scope, reading: bool, allowed: bool) -> None:
    assert permits(held, needed, reading=reading) is allowed
