"""Render output written the way a render writes it, for the sender's tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from promomail.delivery.message import build_email


def ref_of(mailing: str, recipient: str) -> str:
    return hashlib.blake2b(f"{mailing}\0{recipient}".encode(), digest_size=16).hexdigest()


def record(mailing: str, recipient: str, to: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "mailing": mailing,
        "recipient": recipient,
        "to": to,
        "parts": {"subject": f"Hello {recipient}", "text": f"Your code, {recipient}: ABC-123\n"},
        "codes": {"spring": "ABC-123"},
        "ref": ref_of(mailing, recipient),
        **extra,
    }


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records))
    return path


def addresses(*kinds: str, count: int = 1) -> list[str]:
    """``count`` addresses of each kind (see tests/support/smtp_relay.py), in order."""
    return [f"{kind}{i}@example.test" for kind in kinds for i in range(count)]


def jsonl_output(path: Path, mailing: str, to: Sequence[str | None]) -> Path:
    """A mailing's JSON Lines output: recipient ``r<i>`` gets ``to[i]``."""
    return write_jsonl(path, [record(mailing, f"r{i}", a) for i, a in enumerate(to)])


def eml_output(folder: Path, mailing: str, to: Sequence[str | None]) -> Path:
    """The same as :func:`jsonl_output`, as a folder of ``.eml`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, address in enumerate(to):
        r = record(mailing, f"r{i}", address)
        message = build_email(
            sender="shop@example.test",
            mailing=mailing,
            recipient=r["recipient"],
            to=address,
            parts=r["parts"],
            ref=r["ref"],
        )
        (folder / f"r{i}.eml").write_bytes(message.as_bytes())
    return folder
