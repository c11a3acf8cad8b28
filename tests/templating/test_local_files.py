"""Files that are not what they seem: devices, FIFOs, huge files, links out of a folder.

Every file promomail reads on a user's word (template, partial, recipients,
upload, return list) is a regular file read with a bound, or a clean
``Error:`` naming it; a template reached through a link out of the folder it
must stay in is never read; one partial file is one partial, however its
name is spelled.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import promomail.templating.template.files
from promomail.pools.local_files import (
    FileTooLarge,
    LineTooLong,
    NotRegularFile,
    OutsideFolder,
    bounded_lines,
    open_text,
    read_bytes,
)
from promomail.templating.errors import InvalidTemplate
from promomail.templating.mailing.checking import check_template, preview, preview_recipients
from promomail.templating.template.files import MAX_PARTIALS, MAX_TEMPLATE_BYTES
from promomail.templating.template.message import MessageTemplate
from tests.support.cli_helpers import promomail_command
from tests.support.render_helpers import pool_with_codes, write_recipients

#: Seconds a command may take to refuse a file: generous, and what a read of
#: /dev/zero or an open of a FIFO without a writer would never keep to.
REFUSAL_SECONDS = 120


# -- the library ------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_regular_files_are_opened(kind: str, tmp_path: Path, fifo: Path) -> None:
    path = {"device": Path("/dev/zero"), "fifo": fifo, "directory": tmp_path}[kind]
    with pytest.raises(NotRegularFile, match="not a regular file") as refused:
        read_bytes(path, 100)
    assert refused.value.strerror
    with pytest.raises(NotRegularFile):
        open_text(path)


def test_a_read_stops_one_byte_past_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bytes(path, 10) == b"x" * 10
    with pytest.raises(FileTooLarge, match="larger than 9 bytes"):
        read_bytes(path, 9)


def test_within_refuses_what_a_link_leads_out_to(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("secret")
    (folder / "inside").write_text("inside")
    (folder / "out").symlink_to(tmp_path / "secret")
    (folder / "alias").symlink_to(folder / "inside")
    (folder / "sub" / "up").symlink_to(tmp_path)
    assert read_bytes(folder / "alias", 100, within=folder) == b"inside"
    assert read_bytes(folder / "sub" / ".." / "inside", 100, within=folder) == b"inside"
    for path in (folder / "out", folder / "sub" / "up" / "secret", Path("/proc/self/environ")):
        with pytest.raises(OutsideFolder, match="outside"):
            read_bytes(path, 100, within=folder)


_LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@given(
    st.integers(1, 12),
    st.lists(st.tuples(st.integers(0, 16), _LINE_ENDS)),
    st.integers(0, 16),
)
def test_bounded_lines_are_the_lines_or_line_too_long(
    bound: int, shapes: list[tuple[int, str]], last: int
) -> None:
    text = "".join("a" * length + end for length, end in shapes) + "a" * last
    # The lines as reading the file whole gives them (a CR then an LF is one end).
    lines = io.StringIO(text, newline="").readlines()

    def too_long(line: str) -> bool:
        # The bound counts a line with its end; a CR LF it splits stays one end.
        return len(line) > bound and not (len(line) == bound + 1 and line.endswith("\r\n"))

    try:
        pieces = list(bounded_lines(io.StringIO(text, newline=""), bound))
    except LineTooLong as exc:
        assert too_long(lines[exc.line - 1])
        assert not any(map(too_long, lines[: exc.line - 1]))
        return
    assert pieces == lines
    assert not any(map(too_long, lines))


# -- one partial, however spelled ---------------------------------------------------------

_DOTS = st.lists(st.sampled_from(["./", "/"]), max_size=3).map("".join)
SPELLINGS = st.one_of(
    st.builds(
        lambda lead, middle, tail: f"{'./' * lead}parts/{middle}p.j2{tail}",
        st.integers(0, 3),
        _DOTS,
        st.sampled_from(["", "/", "/."]),
    ),
    # A link inside the folder to the same file is the same partial too.
    st.builds(lambda lead: f"{'./' * lead}alias.j2", st.integers(0, 2)),
)


def _reads_of_partials(folder: Path, names: list[str]) -> tuple[int, list[str], str]:
    """(files read, the partials check lists, the rendered body) of a template using ``names``."""
    source = "".join(f"{{% include {name!r} %}}" for name in names)
    path = folder / "message.j2"
    path.write_text(source, encoding="utf-8")
    real = promomail.templating.template.files.read_partial
    reads: list[Path] = []

    def counted(partial: Path, **kwargs: object) -> str:
        reads.append(partial)
        return real(partial, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(promomail.templating.template.files, "read_partial", counted):
        template = MessageTemplate.from_file(path)
        body = template.render({"client": None})["body"]
    return len(reads), template.usage.partials, body


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SPELLINGS, min_size=1, max_size=MAX_PARTIALS + 16))
def test_one_partial_under_any_spelling_is_one_partial(spellings: list[str]) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        (folder / "parts").mkdir()
        (folder / "parts" / "p.j2").write_text("P", encoding="utf-8")
        (folder / "alias.j2").symlink_to(folder / "parts" / "p.j2")
        once = _reads_of_partials(folder, ["parts/p.j2"])
        reads, partials, body = _reads_of_partials(folder, spellings)
    assert partials == ["parts/p.j2"]
    assert body == "P" * len(spellings)
    # Read (and so parsed and compiled) as often as one spelling is: once per environment.
    assert reads == once[0]


def test_distinct_partials_still_count_against_the_limit(tmp_path: Path) -> None:
    names = [f"p{i}.j2" for i in range(MAX_PARTIALS + 1)]
    for name in names:
        (tmp_path / name).write_text("x", encoding="utf-8")
    path = tmp_path / "message.j2"
    path.write_text("".join(f"{{% include './{n}' %}}{{% include {n!r} %}}" for n in names))
    with pytest.raises(InvalidTemplate, match=f"more than {MAX_PARTIALS} partials"):
        MessageTemplate.from_file(path)


# -- the command line: devices, FIFOs, huge files ------------------------------------------


def _run(
    db_url: str, *args: str | Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        promomail_command(db_url, *args),
        input=stdin.decode() if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=REFUSAL_SECONDS,
        check=False,
    )


def _assert_clean_refusal(done: subprocess.CompletedProcess[str], named: Path) -> None:
    # 1, or 2 where click itself refuses the path (a directory) as a usage error.
    assert done.returncode in (1, 2), (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors and str(named) in errors[0], done.stderr


@pytest.fixture
def site(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[Path]:
    pool_with_codes(engine, "spring", 5)
    (tmp_path / "ok.j2").write_text("Hi {{ client.id }} {{ client.promocode('spring') }}\n")
    write_recipients(tmp_path, ["r1"], name="ok.csv")
    yield tmp_path


def _not_what_it_seems(kind: str, folder: Path, role: str) -> Path:
    """A path of ``kind`` for a file of ``role`` (template, recipients, codes, returns)."""
    if kind == "device":
        return Path("/dev/zero")
    if kind == "fifo":
        path = folder / f"fifo.{role}"
        os.mkfifo(path)
        return path
    if kind == "directory":
        path = folder / f"dir.{role}"
        path.mkdir()
        return path
    # Too large for its role: one line with no end, past every bound.
    path = folder / f"huge.{role}"
    with path.open("wb") as handle:
        handle.truncate(MAX_TEMPLATE_BYTES + 1)  # sparse: no disk spent
    if role != "j2":
        path.write_bytes(b"a" * (MAX_TEMPLATE_BYTES + 1))
    return path


KINDS = ["device", "fifo", "directory", "huge"]
#: (suffix of the file, the command taking it), each a read of a different kind.
ROLES: dict[str, tuple[str, Callable[[Path, Path], list[str | Path]]]] = {
    "check": ("j2", lambda f, site: ["check", f]),
    "preview": ("j2", lambda f, site: ["preview", f]),
    "render": (
        "j2",
        lambda f, site: [
            "render",
            f,
            "--recipients",
            site / "ok.csv",
            "--mailing",
            "m1",
            "--out",
            site / "out.jsonl",
        ],
    ),
    "check --recipients": ("csv", lambda f, site: ["check", site / "ok.j2", "--recipients", f]),
    "preview --recipients": (
        "csv",
        lambda f, site: ["preview", site / "ok.j2", "--recipients", f],
    ),
    "render --recipients": (
        "csv",
        lambda f, site: [
            "render",
            site / "ok.j2",
            "--recipients",
            f,
            "--mailing",
            "m1",
            "--out",
            site / "out.jsonl",
        ],
    ),
    "codes upload": ("csv", lambda f, site: ["codes", "upload", "spring", f]),
    "mailing return": ("csv", lambda f, site: ["mailing", "return", "m0", "--recipients", f]),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", list(ROLES))
def test_a_file_that_is_not_what_it_seems_is_a_clean_error(
    db_url: str, site: Path, role: str, kind: str
) -> None:
    suffix, command = ROLES[role]
    if role == "mailing return":
        made = _run(db_url, "render", site / "ok.j2", "--recipients", site / "ok.csv",
                    "--mailing", "m0", "--out", site / "m0.jsonl")  # fmt: skip
        assert made.returncode == 0, made.stderr
    path = _not_what_it_seems(kind, site, suffix)
    done = _run(db_url, *command(path, site))
    _assert_clean_refusal(done, path)
    assert not (site / "out.jsonl").exists()


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_partial_that_is_not_what_it_seems_is_a_clean_error(
    db_url: str, site: Path, kind: str
) -> None:
    _not_what_it_seems(kind, site, "j2")
    name = "fifo.j2" if kind == "fifo" else "huge.j2"
    template = site / "with-partial.j2"
    template.write_text(f"{{% include {name!r} %}}\n")
    done = _run(db_url, "check", template)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert name in done.stdout + done.stderr


def test_an_endless_line_on_stdin_is_a_clean_refusal(db_url: str, site: Path) -> None:
    done = _run(db_url, "codes", "upload", "spring", "-", "--format", "csv",
                stdin=b"code\n" + b"A" * (4 << 20))  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors and "longer than" in errors[0], done.stderr
    ok = _run(db_url, "codes", "upload", "spring", "-", stdin=b"STDIN-1\nSTDIN-2\n")
    assert ok.returncode == 0, ok.stderr


# -- the preview page: no template through a link out of --templates ----------------------

SECRET = "secret-9f3a1c"


def _folder_with_links_out(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    (templates / "sub").mkdir(parents=True)
    (templates / "ok.j2").write_text("Hi {{ client.id }}\n")
    (templates / "sub" / "inner.jinja").write_text("inner {{ client.id }}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.j2").write_text(f"{SECRET}\n")
    (templates / "leak.j2").symlink_to(outside / "secret.j2")
    (templates / "environ.j2").symlink_to("/proc/self/environ")
    (templates / "linked").symlink_to(outside)  # a folder out: its files are not listed
    (templates / "sub" / "up.j2").symlink_to(Path("..") / ".." / "outside" / "secret.j2")
    (templates / "alias.j2").symlink_to(templates / "ok.j2")  # inside: fine
    return templates


def test_a_template_through_a_link_out_of_the_folder_is_not_read(
    engine: Engine, tmp_path: Path
) -> None:
    templates = _folder_with_links_out(tmp_path)
    for name in ("leak.j2", "environ.j2", "linked/secret.j2", "sub/up.j2"):
        path = str(templates / name)
        with pytest.raises(InvalidTemplate, match="outside") as refused:
            check_template(engine, path, within=templates)
        assert SECRET not in str(refused.value)
        with pytest.raises(InvalidTemplate, match="outside"):
            preview(engine, path, preview_recipients(None, None, 1), within=templates)
    assert check_template(engine, str(templates / "alias.j2"), within=templates).ok


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_preview_page_never_shows_a_template_linked_from_outside(
    kind: str, tmp_path: Path
) -> None:
    from tests.support.service_helpers import open_store, start_server, stop_cleanly

    templates = _folder_with_links_out(tmp_path)
    for store in open_store(kind, tmp_path):
        server = start_server(
            store.url, "--templates", str(templates), env={"PROMOMAIL_CANARY": SECRET}
        )
        try:
            with server.client() as client:
                page = client.get("/")
                assert page.status_code == 200
                for listed in ("ok.j2", "alias.j2", "sub/inner.jinja"):
                    assert f">{listed}<" in page.text
                for name in ("leak.j2", "environ.j2", "linked/secret.j2", "sub/up.j2"):
                    assert name not in page.text
                    for route in ("/", "/preview/result"):
                        answer = client.get(route, params={"template": name, "fields": "id=a"})
                        assert answer.status_code == 200
                        assert SECRET not in answer.text
                        assert "PROMOMAIL" not in answer.text
                    version = client.get("/preview/version", params={"template": name})
                    assert version.json()["template"] != name
        finally:
            stop_cleanly(server)
