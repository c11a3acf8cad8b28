"""Returns from a list: a bounce list or recipients file, matched to a mailing.

The store (:mod:`pools.after_sending.returns`) returns codes by recipient id.
A bounce list often names addresses instead; only the mailing's recipients
file knows whose they are, and reading it is this side's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Engine

from promomail.pools import (
    ReturnListError,
    ReturnReport,
    match_addresses,
    read_return_list,
    return_codes,
    show_mailing,
)
from promomail.templating.mailing.recipients import (
    PLAIN_ADDRESS,
    Recipient,
    address_header,
    one_address,
    read_recipients,
)


def return_listed(
    engine: Engine,
    mailing_id: str,
    listed_file: str | os.PathLike[str],
    *,
    reason: str | None = None,
) -> ReturnReport:
    """Give back the codes of the recipients ``listed_file`` names, by id or address.

    The whole list is read and matched before any code moves; a list that
    cannot be read refuses the return. An address that no recipient of the
    mailing has returns nothing and is reported with its line
    (:attr:`ReturnReport.unmatched`); the others' codes go back.
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
        directory = _addresses(read_recipients(source))
    matched = match_addresses(listed, directory)
    report = return_codes(engine, mailing_id, matched.ids, reason=reason)
    return replace(report, unmatched=tuple(matched.unmatched), source=listed.source)


def _addresses(recipients: Iterable[Recipient]) -> Iterator[tuple[str, str | None]]:
    """(id, address) as the file has it and, when different, the address the message went to.

    A bounce list names the address a message went to: without a display
    name, and an internationalised domain in its ASCII form (``xn--…``),
    which the file may spell in Unicode.
    """
    for recipient in recipients:
        value = recipient.fields.get("email")
        yield recipient.id, value
        try:
            written = one_address(value)
        except ValueError:
            continue  # never addressed: no bounce can name it
        if written is None or PLAIN_ADDRESS.fullmatch(written):
            continue  # written as the file has it
        spec = address_header(written).addresses[0].addr_spec
        if spec != value:
            yield recipient.id, spec
