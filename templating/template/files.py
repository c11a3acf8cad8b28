"""Template and partial files: how they are found, named and read, within bounds.

A partial (``{% include 'footer.j2' %}``, ``{% import 'macros.j2' as m %}``)
is a file in the template's own folder or below it, named by a relative
path without ``..``; nothing outside it, symbolic links included. Every
file is read whole, up to :data:`MAX_TEMPLATE_BYTES`: a device or a FIFO
would be read forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import BaseLoader, TemplateNotFound

from promomail.pools import FileTooLarge, read_text
from promomail.templating.errors import InvalidTemplate

#: Characters a template (or partial) file may hold.
MAX_TEMPLATE_CHARS = 1_000_000
#: Bytes read of a template (or partial) file at most: UTF-8 takes up to four a character.
MAX_TEMPLATE_BYTES = 4 * MAX_TEMPLATE_CHARS
#: Partials including partials, this deep at most.
MAX_INCLUDE_DEPTH = 8
#: Partials one template may use in all.
MAX_PARTIALS = 64

PARTIALS_RULE = (
    "a partial is a file in the template's own folder or below it, named by a relative "
    "path without '..', e.g. {% include 'footer.j2' %}"
)


def read_template(path: str | Path, *, within: Path | None = None) -> tuple[str, str]:
    """(name, source) of a template file, or an InvalidTemplate naming it.

    A regular file of bounded size only (a device or FIFO would be read
    forever); with ``within``, one that really lies in that folder, however
    the path reached it (a link out of it is refused).
    """
    name = str(path)
    try:
        return name, read_text(path, MAX_TEMPLATE_BYTES, within=within)
    except FileNotFoundError as exc:
        raise InvalidTemplate("no such file", template=name) from exc
    except UnicodeDecodeError as exc:
        raise InvalidTemplate(f"not UTF-8 text (byte {exc.start + 1})", template=name) from exc
    except FileTooLarge as exc:
        raise InvalidTemplate(
            f"larger than {MAX_TEMPLATE_BYTES} bytes; a template holds at most "
            f"{MAX_TEMPLATE_CHARS} characters",
            template=name,
        ) from exc
    except OSError as exc:
        raise InvalidTemplate(f"cannot read ({exc.strerror})", template=name) from exc


def resolve_partial(folder: Path | None, name: str, *, template: str, line: int | None) -> Path:
    """The file of partial ``name``, or an InvalidTemplate saying why not."""

    def refuse(why: str) -> InvalidTemplate:
        return InvalidTemplate(f"cannot use partial {name!r}: {why}", template=template, line=line)

    if folder is None:
        raise refuse("a template given as text has no folder to take partials from")
    relative = PurePosixPath(name)
    if not name or "\\" in name or "\0" in name or relative.is_absolute():
        raise refuse(PARTIALS_RULE)
    if any(part == ".." for part in relative.parts) or ":" in relative.parts[0]:
        raise refuse(PARTIALS_RULE)
    root = folder.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise refuse(f"it leads outside the template's folder; {PARTIALS_RULE}")
    if not path.is_file():
        raise refuse(f"no such file in {folder}")
    return path


def partial_key(folder: Path, path: Path) -> str:
    """The one name of a partial file (as :func:`resolve_partial` found it), however spelled.

    ``p.j2``, ``./p.j2``, ``././p.j2`` and a link to it inside the folder are
    one file: cached, compiled and counted against :data:`MAX_PARTIALS` once.
    """
    return path.relative_to(folder.resolve()).as_posix()


def read_partial(path: Path, *, template: str, line: int | None, within: Path | None = None) -> str:
    """The partial's text; ``within``: the folder the file must really be in when opened."""
    try:
        source = read_text(path, MAX_TEMPLATE_BYTES, within=within)
    except UnicodeDecodeError as exc:
        raise InvalidTemplate(
            f"partial {path} is not UTF-8 text (byte {exc.start + 1})", template=template, line=line
        ) from None
    except FileTooLarge:
        raise InvalidTemplate(
            f"partial {path} is larger than {MAX_TEMPLATE_BYTES} bytes; a partial holds at most "
            f"{MAX_TEMPLATE_CHARS} characters",
            template=template,
            line=line,
        ) from None
    except OSError as exc:
        raise InvalidTemplate(
            f"cannot read partial {path} ({exc.strerror})", template=template, line=line
        ) from None
    return source


class PartialLoader(BaseLoader):
    """Loads partials at render time, by the same rules the parse checked."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        try:
            path = resolve_partial(self.folder, template, template=template, line=None)
            source = read_partial(path, template=template, line=None, within=self.folder)
        except InvalidTemplate as exc:
            raise TemplateNotFound(template, exc.reason) from None
        return source, str(path), lambda: True
