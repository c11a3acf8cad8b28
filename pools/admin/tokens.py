"""Bearer tokens of the HTTP service: who may do what, on which pools.

A token's secret is shown once, when it is created; the store keeps only
its SHA-256. The secret is 256 random bits, so a plain hash is as good as a
slow password hash here and costs nothing per request. Every request looks
its token up again, so a new or a revoked token takes effect at once.

The access rule, written once for every front end:

* ``admin`` may do everything;
* ``read`` may use every reading route (who got which code included);
* ``redeem`` may use the routes declared for redemption (check a code,
  redeem it, roll a redemption back) and nothing else;
* ``events`` may post delivery events in promomail's own form and nothing
  else: a script or another mail service reporting bounces needs no view of
  the pools, their codes or who got them;
* a token limited to pools sees and acts on those pools alone: the others
  are "not found" to it, and it cannot create pools.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.choices import Scope
from promomail.pools.errors import TokenError, TokenNotFound
from promomail.pools.store.clock import iso_seconds, utcnow
from promomail.pools.store.db import (
    one_statement_read,
    read_transaction,
    write_transaction,
)
from promomail.pools.store.models import Pool, ServiceToken

#: Marks promomail secrets, so a leaked one is recognisable in logs and scanners.
TOKEN_PREFIX = "pm_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def permits(held: Scope, needed: Scope, *, reading: bool) -> bool:
    """Whether a token of scope ``held`` may use a route that needs ``needed``.

    ``reading`` is true for routes that change nothing (GET): a ``read``
    token may use all of them, whatever scope they are declared with. An
    ``events`` token reads nothing: it may use only the routes that need
    ``events``.
    """
    return held is Scope.ADMIN or held is needed or (held is Scope.READ and reading)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The holder of a valid token, as a request sees it."""

    name: str
    scope: Scope
    #: Pool ids the token is limited to; empty means every pool.
    pools: frozenset[str] = frozenset()

    @property
    def limited(self) -> bool:
        return bool(self.pools)

    def sees(self, pool_id: str) -> bool:
        return not self.pools or pool_id in self.pools

    def visible(self, pool_ids: Iterable[str]) -> list[str]:
        return [p for p in pool_ids if self.sees(p)]

    def permits(self, needed: Scope, *, reading: bool) -> bool:
        return permits(self.scope, needed, reading=reading)

    @property
    def may_preview(self) -> bool:
        """The preview page reads every pool a template names and real last codes:
        not for a token limited to pools, nor for one that only posts delivery events."""
        return not self.limited and self.scope is not Scope.EVENTS


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: str
    pools: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "pools": self.pools,
            "created_at": iso_seconds(self.created_at),
            "revoked_at": iso_seconds(self.revoked_at),
        }


@dataclass(frozen=True)
class IssuedToken:
    """A new token with its secret: the only time the secret exists outside its holder."""

    name: str
    token: str
    scope: str
    pools: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "token": self.token, "scope": self.scope, "pools": self.pools}


def _info(row: Any) -> TokenInfo:
    return TokenInfo(row.name, row.scope, json.loads(row.pools), row.created_at, row.revoked_at)


def create_token(
    engine: Engine, name: str, scope: Scope | str, pools: Sequence[str] = ()
) -> IssuedToken:
    if not _NAME.match(name):
        raise TokenError(
            f"token name {name!r} is not valid: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    try:
        held = Scope(scope)
    except ValueError as exc:
        choices = ", ".join(s.value for s in Scope)
        raise TokenError(f"token scope {scope!r} is not one of {choices}") from exc
    limited = list(dict.fromkeys(pools))
    if limited and held is Scope.EVENTS:
        # An event names a message, whose codes may come from several pools:
        # a pool limit would have nothing to hold on to.
        raise TokenError(
            f"token {name!r}: scope 'events' cannot be limited to pools: "
            "delivery events are about messages, not pools"
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with write_transaction(engine) as conn:
        if limited:
            known = set(conn.execute(select(Pool.id).where(Pool.id.in_(limited))).scalars())
            for pool_id in limited:
                if pool_id not in known:
                    raise unknown_pool(conn, pool_id)
        taken = conn.execute(
            select(ServiceToken.revoked_at).where(ServiceToken.name == name)
        ).first()
        if taken is not None:
            state = "revoked" if taken[0] is not None else "active"
            raise TokenError(f"token {name!r} already exists ({state}): choose another name")
        conn.execute(
            insert(ServiceToken).values(
                name=name,
                token_hash=hash_secret(secret),
                scope=held.value,
                pools=json.dumps(limited),
                created_at=utcnow(),
            )
        )
    return IssuedToken(name, secret, held.value, limited)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with read_transaction(engine) as conn:
        rows = conn.execute(select(ServiceToken).order_by(ServiceToken.name))
        return [_info(row) for row in rows]


def revoke_token(engine: Engine, name: str) -> TokenInfo:
    """Revoke by name; revoking a revoked token again changes nothing."""
    with write_transaction(engine) as conn:
        row = conn.execute(select(ServiceToken).where(ServiceToken.name == name)).first()
        if row is None:
            raise TokenNotFound(name)
        if row.revoked_at is None:
            conn.execute(
                update(ServiceToken).where(ServiceToken.name == name).values(revoked_at=utcnow())
            )
        return _info(conn.execute(select(ServiceToken).where(ServiceToken.name == name)).one())


#: Every request's token look-up: built once, a compiled-cache hit each time.
_HOLDER = select(ServiceToken.name, ServiceToken.scope, ServiceToken.pools).where(
    ServiceToken.token_hash == bindparam("token_hash"),
    ServiceToken.revoked_at.is_(None),
)


def authenticate(engine: Engine, secret: str) -> Principal | None:
    """The holder of ``secret``, or None for an unknown or revoked token."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with one_statement_read(engine) as conn:
        row = conn.execute(_HOLDER, {"token_hash": hash_secret(secret)}).first()
    if row is None:
        return None
    return Principal(row.name, Scope(row.scope), frozenset(json.loads(row.pools)))
