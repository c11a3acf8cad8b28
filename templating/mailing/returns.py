"""Returns from a list: a bounce list or recipients file, matched to a mailing.

The store (:mod:`pools.after_sending.returns`) returns codes by recipient id.
A bounce list often names addresses instead; only the mailing's recipients
file knows whose they are, and reading it is this side's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine

from pools.after_sending.returns import (
    ReturnReport,
    match_addresses,
    read_return_list,
    return_codes,
)
from pools.errors import ReturnListError
from pools.issuing.mailings import show_mailing
from templating.mailing.recipients import read_recipients


def return_listed(
    engine: Engine,
    mailing_id: str,
    listed_file: str | os.PathLike[str],
    *,
    reason: str | None = None,
) -> ReturnReport:
    """Give back the codes of the recipients ``listed_file`` names, by id or address.

    The whole list is read and matched before any code moves: an address
    that no recipient of the mailing has refuses the list.
    """
    listed = read_return_list(listed_file)
    directory: Iterable[tuple[str, str | None]] = ()
    if listed.emails:
        source = show_mailing(engine, mailing_id).recipients_file
        if not source or not Path(source).is_file():
            raise ReturnListError(
                f"{listed.source} names recipients by e-mail address, but the recipients "
                f"file of mailing {mailing_id!r} ({source or 'unknown'}) cannot be read to "
                "match them: list recipient ids instead"
            )
        directory = ((r.id, r.fields.get("email")) for r in read_recipients(source))
    ids = match_addresses(listed, directory, mailing_id=mailing_id)
    return return_codes(engine, mailing_id, ids, reason=reason)
