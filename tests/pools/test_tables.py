"""Tables users hand over as text: separators, header names, byte order marks, repeats.

Recipients files and bounce lists from spreadsheets and CRMs: ``;``
(Excel in many locales), tab and ``|`` separated, headers in any case, a
UTF-8 byte order mark. The reader either reads exactly the rows written or
refuses, naming the line (and column) at fault; an id met again is
reported with its line, never dropped in silence.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from promomail.pools.after_sending.returns import read_return_list
from promomail.pools.errors import ReturnListError
from promomail.pools.tables import (
    DELIMITERS,
    SAMPLE_LINES,
    TableError,
    delimiter_name,
    find_columns,
    take_sample,
)
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.recipients import (
    Duplicate,
    Recipient,
    columns_of,
    duplicates_in,
    read_recipients,
)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def _read(path: Path) -> tuple[list[Recipient], list[tuple[str, int]]]:
    repeats: list[tuple[str, int]] = []
    read = list(read_recipients(path, repeated=lambda rid, line: repeats.append((rid, line))))
    return read, repeats


# -- exports as spreadsheets and CRMs write them ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # Excel in a locale whose decimal mark is a comma, with a byte order mark.
        "\ufeffID;Email;First name\r\nc1;a@x.org;Ada\r\nc2;b@x.org;Grace, Dr\r\n",
        '\ufeffID,Email,First name\r\nc1,a@x.org,Ada\r\nc2,b@x.org,"Grace, Dr"\r\n',
        "Id\tEMAIL\tFirst name\nc1\ta@x.org\tAda\nc2\tb@x.org\tGrace, Dr\n",
        "iD|eMail|First name\nc1|a@x.org|Ada\nc2|b@x.org|Grace, Dr\n",
    ],
    ids=["excel-semicolon-bom", "comma-bom", "tab", "pipe"],
)
def test_exports_read_whatever_their_separator_and_header_case(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "r.csv", text)
    read, repeats = _read(path)
    assert [(r.id, r.fields["email"], r.fields["First name"], r.line) for r in read] == [
        ("c1", "a@x.org", "Ada", 2),
        ("c2", "b@x.org", "Grace, Dr", 3),
    ]
    assert repeats == []
    # Templates read the address as client.email whatever the header calls it,
    # and the other columns by their own names.
    columns = columns_of(path)
    assert "email" in columns and "First name" in columns


def test_a_header_without_id_lists_the_columns_it_has(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "Customer;E-mail;Name\nc1;a@x.org;Ada\n")
    with pytest.raises(RecipientError) as caught:
        list(read_recipients(path))
    assert str(caught.value) == (
        f"{path}, line 1: the header has no 'id' column (any case); the columns found, "
        "separated by ';': 'Customer', 'E-mail', 'Name'"
    )


@pytest.mark.parametrize(
    ("header", "named"),
    [("id,email,ID", "'id' and 'ID'"), ("Id,Email,EMAIL", "'Email' and 'EMAIL'")],
)
def test_two_columns_answering_to_one_name_are_refused(
    tmp_path: Path, header: str, named: str
) -> None:
    path = _write(tmp_path, "r.csv", f"{header}\nc1,a@x.org,b@x.org\n")
    with pytest.raises(RecipientError, match=rf"r.csv, line 1: columns {named} are both"):
        list(read_recipients(path))


def test_jsonl_keys_are_found_whatever_their_case(tmp_path: Path) -> None:
    records = [{"ID": 7, "Email": "a@x.org"}, {"id": "c2", "EMAIL": "b@x.org", "n": 1}]
    path = _write(tmp_path, "r.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    read, _ = _read(path)
    assert [(r.id, r.fields["email"], r.line) for r in read] == [
        ("7", "a@x.org", 1),
        ("c2", "b@x.org", 2),
    ]
    both = _write(tmp_path, "both.jsonl", '{"id": 1}\n{"id": 2, "Id": 3}\n')
    with pytest.raises(RecipientError, match=r"both.jsonl, line 2: keys 'id' and 'Id' are both"):
        list(read_recipients(both))


def test_a_utf16_export_is_named_as_such(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "id\temail\nc1\ta@x.org\n".encode("utf-16"))
    with pytest.raises(RecipientError, match=r"r.csv: the file is UTF-16 text .*save it as UTF-8"):
        list(read_recipients(path))


def test_a_header_two_separators_read_differently_is_refused(tmp_path: Path) -> None:
    # Read with ',' or with ';', it has an id column and rows as wide as the header.
    path = _write(tmp_path, "r.csv", "id,x;id\n1,a;2\n")
    with pytest.raises(RecipientError) as caught:
        list(read_recipients(path))
    assert str(caught.value) == (
        f"{path}, line 1: the columns could be separated by ',' (2 columns) or ';' "
        "(2 columns); quote the column names that hold the other character"
    )


def test_a_header_of_one_column_is_read_with_commas(tmp_path: Path) -> None:
    # No separator in the header: nothing tells one from another, and a row
    # that does not fit the header is named by its line.
    path = _write(tmp_path, "r.csv", "id\na\nb;c\nd,e\n")
    with pytest.raises(RecipientError, match=r"r.csv, line 4: 2 fields where the header has 1"):
        list(read_recipients(path))


def test_the_sample_is_bounded_and_a_record_it_cuts_is_read_whole(tmp_path: Path) -> None:
    lines = iter(["id;note\n", *[f"c{i};x\n" for i in range(SAMPLE_LINES + 10)]])
    sample, complete = take_sample(lines)
    assert len(sample) == SAMPLE_LINES and not complete
    assert next(lines) == f"c{SAMPLE_LINES - 1};x\n"  # the rest is still to be read
    # A quoted value that starts inside the sample and ends after it.
    before = "".join(f"c{i};x\n" for i in range(SAMPLE_LINES - 2))
    path = _write(tmp_path, "r.csv", f'id;note\n{before}last;"one\ntwo\nthree"\n')
    read = list(read_recipients(path))
    assert len(read) == SAMPLE_LINES - 1
    assert (read[-1].id, read[-1].fields["note"]) == ("last", "one\ntwo\nthree")


def test_find_columns_keeps_the_aliases_order_and_refuses_two_of_one() -> None:
    names = ["Recipient", " CUSTOMER_ID ", "Email"]
    assert find_columns(names, ("id", "customer_id", "recipient"), source="f") == [1, 0]
    with pytest.raises(TableError, match=r"f, line 3: keys 'a' and 'A' are both the 'a' key"):
        find_columns(["a", "A"], ("a",), source="f", line=3, noun="key")


# -- duplicates: reported with both lines --------------------------------------------


def test_a_repeated_id_is_reported_with_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", 'id,n\na,1\nb,2\n"a",3\nb,4\nc,5\n a ,6\n')
    read, repeats = _read(path)
    assert [(r.id, r.fields["n"]) for r in read] == [("a", "1"), ("b", "2"), ("c", "5")]
    assert repeats == [("a", 4), ("b", 5), ("a", 7)]
    assert duplicates_in(path, repeats, None) == [
        Duplicate("a", 4, 2),
        Duplicate("b", 5, 3),
        Duplicate("a", 7, 2),
    ]
    assert duplicates_in(path, [], None) == []


# -- the property: exactly the rows written, or the line at fault --------------------

#: Characters that make CSV hard: every separator, quotes, line ends, spaces.
_HARD = ",;\t|\"' \r\n"
_names = st.text(alphabet=st.sampled_from("abcXYZ_-. " + _HARD), min_size=1, max_size=8).map(
    str.strip
)
_values = st.text(alphabet=st.sampled_from("ab1é " + _HARD), max_size=8)
#: Few distinct ids, so that repeats are common.
_ids = st.text(alphabet=st.sampled_from("ab1,;|\" '"), min_size=1, max_size=3).map(str.strip)
_cases = st.sampled_from(["id", "ID", "Id", "iD"])
_email_cases = st.sampled_from([None, "email", "Email", "EMAIL"])


@dataclass(frozen=True)
class _Table:
    delimiter: str
    header: list[str]
    rows: list[list[str]]
    bom: bool
    line_end: str
    quote_all: bool
    #: A NUL planted in one value: (row index, column index).
    bad: tuple[int, int] | None

    @property
    def id_index(self) -> int:
        return next(i for i, name in enumerate(self.header) if name.casefold() == "id")

    def record(self, cells: list[str]) -> str:
        """One record as RFC 4180 has it: a cell holding the separator, a quote or a
        line end is quoted (Python's writer leaves a lone CR bare when its line end
        is LF); with ``quote_all``, every cell is, as some exports do."""
        special = (self.delimiter, '"', "\r", "\n")
        return self.delimiter.join(
            '"' + cell.replace('"', '""') + '"'
            if self.quote_all or any(c in cell for c in special)
            else cell
            for cell in cells
        )

    def text(self) -> tuple[str, list[int]]:
        """The file, and the line each row starts on."""
        text = self.record(self.header) + self.line_end
        starts = []
        for row in self.rows:
            # Lines as the reader counts them: any of \n, \r, \r\n ends one.
            starts.append(len(io.StringIO(text, newline="").readlines()) + 1)
            text += self.record(row) + self.line_end
        return ("\ufeff" if self.bom else "") + text, starts


@st.composite
def _tables(draw: st.DrawFn) -> _Table:
    id_name = draw(_cases)
    email_name = draw(_email_cases)
    # Two columns at least: a header of one has no separator to find.
    others = draw(
        st.lists(
            _names.filter(lambda n: n and n.casefold() not in ("id", "email")),
            min_size=0 if email_name else 1,
            max_size=3,
            unique=True,
        )
    )
    header = [id_name, *([email_name] if email_name else []), *others]
    header = draw(st.permutations(header))
    id_index = header.index(id_name)
    rows = []
    for recipient_id in draw(st.lists(_ids.filter(bool), min_size=1, max_size=8)):
        row = [draw(_values) for _ in header]
        row[id_index] = recipient_id
        rows.append(row)
    bad = None
    if draw(st.integers(0, 9)) == 0:
        bad = (draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1)))
        rows[bad[0]][bad[1]] += "\x00"
    return _Table(
        draw(st.sampled_from(DELIMITERS)),
        header,
        rows,
        draw(st.booleans()),
        draw(st.sampled_from(["\r\n", "\n"])),
        draw(st.booleans()),
        bad,
    )


def _expected(table: _Table, starts: list[int]) -> tuple[list[Recipient], list[tuple[str, int]]]:
    names = table.header
    email = next((n for n in names if n.casefold() == "email"), None)
    kept: list[Recipient] = []
    repeats: list[tuple[str, int]] = []
    seen: set[str] = set()
    for row, line in zip(table.rows, starts, strict=True):
        recipient_id = row[table.id_index].strip()
        if recipient_id in seen:
            repeats.append((recipient_id, line))
            continue
        seen.add(recipient_id)
        fields = dict(zip(names, row, strict=True))
        if email is not None and email != "email":
            fields["email"] = fields[email]
        kept.append(Recipient(recipient_id, fields, line))
    return kept, repeats


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=_tables())
def test_any_table_reads_exactly_as_written_or_names_the_line_at_fault(
    tmp_path: Path, table: _Table
) -> None:
    text, starts = table.text()
    path = _write(tmp_path, f"r-{uuid.uuid4().hex[:8]}.csv", text)
    try:
        read, repeats = _read(path)
    except RecipientError as exc:
        message = str(exc)
        event("refused: " + re.sub(r".*, line \d+(, column \d+ \(.*\))?: ", "", message)[:40])
        if table.bad is not None:
            row, column = table.bad
            line = starts[row]
            # The NUL, or a row before it that the reading found at fault.
            named = re.match(rf"{re.escape(str(path))}, line (\d+)", message)
            assert named is not None, message
            assert int(named.group(1)) <= line, message
            if int(named.group(1)) == line and "NUL" in message:
                assert f"column {column + 1}" in message
            return
        # A table written whole can only be refused for what its header leaves open.
        assert message.startswith(f"{path}, line 1: the columns could be separated by "), message
        assert delimiter_name(table.delimiter) in message
        return
    event(f"read with {delimiter_name(table.delimiter)}, repeats: {bool(repeats)}")
    assert table.bad is None, "a NUL was read as a value"
    assert (read, repeats) == _expected(table, starts)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=_tables())
def test_a_bounce_list_reads_every_id_or_names_the_line_at_fault(
    tmp_path: Path, table: _Table
) -> None:
    text, _starts = table.text()
    path = _write(tmp_path, f"b-{uuid.uuid4().hex[:8]}.csv", text)
    try:
        listed = read_return_list(path)
    except ReturnListError as exc:
        message = str(exc)
        assert re.match(rf"{re.escape(str(path))}(, line \d+)?: ", message), message
        return
    assert listed.ids == [row[table.id_index].strip() for row in table.rows]
    assert listed.emails == []


def test_a_bounce_list_as_a_semicolon_export_with_any_header_case(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "\ufeffEMAIL;Reason\r\nA@x.org;hard\r\n\r\nb@x.org;x\r\n")
    listed = read_return_list(path)
    assert (listed.ids, listed.emails) == ([], [(2, "A@x.org"), (4, "b@x.org")])
    missing = _write(tmp_path, "c.csv", "Mail;Reason\nA@x.org;hard\n")
    with pytest.raises(ReturnListError, match=r"the columns found: 'Mail', 'Reason'"):
        read_return_list(missing)
