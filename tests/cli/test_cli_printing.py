"""What the command line prints to a person: no secret of the store's URL, no terminal control.

Values stored through the API (pool names, descriptions, upload file names,
redemption customers and orders, reasons) reach an operator's terminal in
tables, messages and ``Error:`` lines: none may carry a control the terminal
would run. And a PostgreSQL password, wherever and however a URL carries it,
never appears in what a failing command prints.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import re
from collections.abc import Callable
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.after_sending.redemption import redeem
from promomail.pools.choices import FileFormat
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.display import KNOWN_PARAMETERS
from tests.support.cli_helpers import Cli
from tests.support.paths import REPO_ROOT

#: What must never reach a terminal raw (a line feed is the layout's own).
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
NASTY = [
    *"\x1b\x07\r\n\t\x08\x0b\x0c\x7f\x85\x90\x9b\x9c\x9d\u061c\u200e\u200f",
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029",
    "\x1b]8;;https://evil.example\x07",
    "\x1b[2J",
    "\x1b]0;owned\x07",
    "\x9b31m",
]
#: Text as the API stores it: anything but NUL and lone surrogates (it refuses those).
STORED = st.lists(
    st.sampled_from(NASTY) | st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=12,
).map("".join)

_serial = itertools.count()


def _no_raw_control(text: str, where: str) -> None:
    found = RAW_CONTROL.search(text)
    assert found is None, f"{where} printed {found.group()!r}: {text!r}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=STORED, description=STORED, file=STORED, customer=STORED, order=STORED)
def test_stored_values_reach_the_terminal_without_controls(
    engine: Engine, db_url: str, name: str, description: str, file: str, customer: str, order: str
) -> None:
    n = next(_serial)
    pool_id, code = f"p{n}", f"CODE-{n}"
    # As the command line takes them: not empty, not only whitespace.
    customer, order = f"c{customer}", f"o{order}"
    create_pool(
        engine,
        PoolSettings(name="n" + name, description="d" + description),
        pool_id=pool_id,
        activate=True,
    )
    upload = Upload(file, FileFormat.TXT, stream=io.BytesIO(f"{code}\n{code}-2\n".encode()))
    upload_codes(engine, pool_id, [upload])
    assert redeem(engine, code, customer=customer, order=order).ok
    run = Cli(db_url)
    commands: list[tuple[str, ...]] = [
        ("pool", "list"),
        ("pool", "show", pool_id),
        ("imports", pool_id),
        ("codes", "list", pool_id),
        ("customer", customer),
        ("redeem", code, "--order", order),  # a replay: prints the stored customer and order
        ("redeem", code, "--order", "another"),  # refused: an Error line
        ("redeem", f"{code}-2", "--customer", customer, "--order", order, "--dry-run"),
        ("mailings",),
        ("token", "list"),
    ]
    for args in commands:
        result = run(*args)
        _no_raw_control(result.stdout, " ".join(args))
        _no_raw_control(result.stderr, " ".join(args))
    if "\x1b" in name:
        # Shown, as a visible escape.
        assert "\\x1b" in run.ok("pool", "list").stdout
    # --json stays exact: the document holds the stored values as they are.
    document = run.json("pool", "show", pool_id)
    assert (document["name"], document["description"]) == ("n" + name, "d" + description)
    assert [i["file"] for i in document["imports"]] == [file]
    history = run.json("customer", customer)
    mine = [(r["redeemed_by"], r["order"]) for r in history["redemptions"] if r["code"] == code]
    assert mine == [(customer, order)]
    _no_raw_control(run.ok("pool", "show", pool_id, "--json").stdout.replace("\n", ""), "json")


# --- passwords in the store's URL ------------------------------------------------------

#: Pieces of a password: no word of this alphabet appears in any message by chance.
WORDS = st.text(alphabet="QXZJVWK", min_size=5, max_size=8)
SEPARATORS = st.sampled_from(
    [
        *["", "@", ":", "/", "?", "#", "&", "=", "%", "%40", "%2F", "%25", "%zz", "+", " "],
        *[";", "'", '"', "\\", "[", "]", "!", "$", "*", ",", "~", "\t"],
        *["&sslmode=", "?password=", "@127.0.0.1:1/"],
    ]
)
PASSWORDS = st.lists(st.tuples(SEPARATORS, WORDS), min_size=1, max_size=3).map(
    lambda parts: (["".join(sep + word for sep, word in parts)], [word for _, word in parts])
)
HOST = "127.0.0.1:1"
RAW_PARAMETER = re.compile(f"[&;]({'|'.join(KNOWN_PARAMETERS)})=")
SHAPES: list[Callable[[str], str]] = [
    lambda pw: f"postgresql://bob:{pw}@{HOST}/db",
    lambda pw: f"postgresql://bob:{quote(pw, safe='')}@{HOST}/db",
    lambda pw: f"postgresql+psycopg://bob:{pw}@{HOST}/db?application_name=promo",
    lambda pw: f"postgresql://bob@{HOST}/db?password={pw}",
    lambda pw: f"postgresql://bob@{HOST}/db?password={quote(pw, safe='')}",
    lambda pw: f"postgresql://bob@{HOST}/db?sslmode=disable&sslpassword={pw}",
    lambda pw: f"postgresql://bob@{HOST}/db?passfile={quote(pw, safe='')}&connect_timeout=3",
    lambda pw: f"postgresql://bob:{pw}@{HOST}:notaport/db",
    lambda pw: f"postgresql://bob:{pw}@127.0.0.1:99999/db",
    lambda pw: f"postgresql:/bob:{pw}@{HOST}/db",
    lambda pw: f"postgresql://bob:{pw}",
    lambda pw: f"postgresql+nosuch://bob:{pw}@{HOST}/db",
    lambda pw: f"mysql://bob:{pw}@{HOST}/db",
    lambda pw: f"host=127.0.0.1 port=1 user=bob password={pw}",
]


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, shape=st.sampled_from(SHAPES), command=st.sampled_from(["pool", "db"]))
def test_no_piece_of_a_password_is_ever_printed(
    password: tuple[list[str], list[str]], shape: Callable[[str], str], command: str
) -> None:
    [secret], words = password
    url = shape(secret)
    # Written raw in a query, "…&sslmode=X" is a parameter by any reading: no
    # one can tell it was meant as part of the password.
    assume(not ("?" in url.replace(secret, "") and RAW_PARAMETER.search(secret)))
    # Likewise "bob:x@y" with nothing after it is the password "x" at host "y".
    assume(not (url == f"postgresql://bob:{secret}" and "@" in secret))
    args = ("pool", "list") if command == "pool" else ("db", "current")
    result = Cli(url)(*args)
    assert result.exit_code == 1, (url, result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word not in result.stdout + result.stderr, (url, result.stderr)


def test_the_service_never_prints_a_password_when_its_store_fails() -> None:
    for url in (
        f"postgresql://bob@{HOST}/db?password=QXZJVW",
        f"postgresql://bob:QXZJ@VWKQX@{HOST}/db",
        f"postgresql://bob:QXZJVW@{HOST}/db",
    ):
        result = Cli(url)("serve", "--port", "0")
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: ")
        assert "QXZJ" not in result.stderr and "VWKQX" not in result.stderr


def test_the_store_config_shows_no_secret() -> None:
    from promomail.pools.store.db import StoreConfig

    config = StoreConfig(f"postgresql://bob:QXZJVW@{HOST}/db?sslpassword=WKQXZ&sslmode=require")
    for shown in (str(config), repr(config), json.dumps(str(config))):
        assert "QXZJVW" not in shown and "WKQXZ" not in shown
    assert str(config) == f"postgresql://bob:***@{HOST}/db?sslmode=require&sslpassword=***" or (
        str(config) == f"postgresql://bob:***@{HOST}/db?sslpassword=***&sslmode=require"
    )


def _shown_safely(call: ast.Call) -> bool:
    """A literal, or a text already passed through ``printable``."""
    return all(
        isinstance(arg, ast.Constant)
        or (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Name)
            and arg.func.id == "printable"
        )
        for arg in call.args
    )


#: The modules that hold the safe helpers themselves (and the errors' own lines).
SAFE_HELPERS = ("output.py", "errors.py")


def test_commands_print_only_through_the_safe_helpers() -> None:
    """The one place: a command prints people's text with ``say``, ``note``, the table
    and field helpers, ``emit_json`` or an error, never with ``click.echo`` of its own."""
    for path in sorted((REPO_ROOT / "commands").glob("*.py")):
        if path.name in SAFE_HELPERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("echo", "secho", "print", "write"):
                assert _shown_safely(node), f"{path.name}:{node.lineno} prints raw text"
