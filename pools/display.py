"""Text shown to people: URLs without their secrets, stored values without terminal controls.

Secrets. A database or SMTP URL may carry a password in several places: the
userinfo (``user:PASSWORD@host``), percent-encoded or not, and query
parameters (``?password=…``, ``?sslpassword=…``, ``?passfile=…``). A URL
the parsers misread (an unescaped ``@`` or ``&`` inside a password) puts
pieces of the password where a host, a database or an option name should
be, and the driver's error then echoes them. So:

* :func:`redact_url` masks the text itself, without trusting any parser:
  everything between the user name and the last ``@`` of the URL, and the
  value of every secret-looking parameter up to the next parameter. It
  over-masks a strange URL rather than show part of a secret;
* :func:`url_secrets` lists the secret pieces of a URL, for scrubbing them
  out of texts that may echo them (a driver's error message).

Terminal controls. Values stored through the API (pool names,
descriptions, file names, customers and orders of redemptions, token
names, reasons) reach an operator's terminal in tables, messages and
errors. Printed raw, an escape sequence in one (OSC, CSI, a bare CR, BEL,
the C1 controls) would be run by the terminal: retitle it, rewrite what
is on screen, hide lines, or plant a link; a bidirectional override makes
the rest of a line read backwards. :func:`printable` writes every such
character as a visible escape (``\x1b``, ``\u202e``), which no terminal
runs.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

MASK = "***"


def counted(count: int, noun: str) -> str:
    """``1 more problem``, ``3 more problems``: a count and its noun, agreeing."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


#: What no terminal may receive raw: C0 controls, DEL and the C1 controls, the
#: bidirectional marks, embeddings, overrides and isolates, the Unicode line
#: and paragraph separators, and lone surrogates (which cannot even be encoded).
_OTHER = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_CONTROLS = re.compile(f"[\x00-\x1f{_OTHER}]")
#: The same, but a text's own line feeds and tabs are its layout, kept.
_CONTROLS_BUT_LAYOUT = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHER}]")
#: What JSON leaves raw in its strings (it escapes the C0 controls itself).
_RAW_IN_JSON = re.compile(f"[{_OTHER}]")
#: The parameters a URL of promomail's may hold: libpq's connection
#: parameters (a PostgreSQL store) and those of an SMTP URL.
KNOWN_PARAMETERS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "sslnegotiation",
        "requiressl",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslkeylogfile",
        "sslpassword",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "min_protocol_version",
        "max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
        "from",
        "starttls",
    }
)
#: Parameter names that carry a secret, or name where one is kept.
_SECRET_NAME = r"[\w.-]*(?:pass|secret|token)[\w.-]*"
_NEXT_PARAMETER = "|".join(sorted(KNOWN_PARAMETERS, key=len, reverse=True))
#: A secret parameter in a query (``?password=…``): its value runs to the next
#: known parameter (``&sslmode=``): an unescaped ``&`` or ``=`` inside a
#: password must not end the mask.
_QUERY_SECRET = re.compile(
    rf"(?i)([?&;]{_SECRET_NAME}=)(.*?)(?=[&;](?:{_NEXT_PARAMETER})=|$)", re.DOTALL
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)(.*)$", re.DOTALL)
#: A piece shorter than this is not scrubbed from other texts: it would
#: match ordinary words (and a URL shows it masked anyway).
MIN_SCRUBBED = 4


def redact_url(text: str) -> str:
    """``text`` (a URL, or what was meant as one) with every secret in it masked.

    The places a secret may be are found in the text as given, each on its
    own, and every one of them is masked: a password with an ``@`` or a
    ``?password=`` inside it cannot move the other one out of view.
    """
    scheme = _SCHEME.match(text)
    if scheme is None:
        # Not a URL at all. A keyword/value string (``password=…``) or
        # anything with a userinfo-like part is not shown, as there is no
        # telling where a secret in it ends; a plain typo is.
        return MASK if any(mark in text for mark in "=@:") else text
    spans = [match.span(2) for match in _QUERY_SECRET.finditer(text)]
    start = scheme.end(1)
    rest = scheme.group(2)
    at = rest.rfind("@")
    if at >= 0:
        colon = rest.find(":", 0, at)
        if colon >= 0:
            spans.append((start + colon + 1, start + at))
    else:
        # No userinfo: ``host:port`` is all a colon may start, anything but a
        # port number after it is taken for a secret, to the end.
        authority = rest.partition("/")[0]
        host, colon_mark, port = authority.partition(":")
        bracketed = host.startswith("[") and "]" not in host
        if colon_mark and not port.isdigit() and not bracketed:
            spans.append((start + len(host) + 1, len(text)))
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    shown, position = [], 0
    for begin, end in merged:
        shown.append(text[position:begin] + MASK)
        position = end
    return "".join(shown) + text[position:]


def url_secrets(text: str) -> list[str]:
    """The secret pieces of a URL as a driver may show them: raw and decoded.

    The userinfo password (as far as the last ``@``) and every value of a
    secret parameter, whole and in the pieces a parser may have cut it in.
    """
    pieces: list[str] = []
    scheme = _SCHEME.match(text)
    if scheme is not None:
        rest = scheme.group(2)
        at = rest.rfind("@")
        if at >= 0:
            _user, colon, password = rest[:at].partition(":")
            if colon:
                pieces.append(password)
                # The parts a parser may have taken for a password, a host or a path.
                pieces.extend(re.split(r"[@/?#&]", password))
    for match in _QUERY_SECRET.finditer(text):
        pieces.append(match.group(2))
        pieces.extend(re.split(r"[&;]", match.group(2)))
    found: list[str] = []
    for piece in pieces:
        for form in (piece, unquote(piece), unquote_plus(piece)):
            if len(form) >= MIN_SCRUBBED and form not in found:
                found.append(form)
    # Longest first, so a piece inside a longer one never leaves the rest of it.
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each secret masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, layout: bool = False) -> str:
    """``text`` with every terminal control written as a visible escape.

    With ``layout``, line feeds and tabs stay (a multi-line text of its own,
    such as a rendered message); otherwise they are escaped too, so one
    value stays in its cell or line.
    """
    return (_CONTROLS_BUT_LAYOUT if layout else _CONTROLS).sub(_escaped, text)


def json_for_terminal(document: str) -> str:
    """A JSON text with the characters :func:`printable` escapes written as ``\\uXXXX``.

    JSON escapes C0 controls inside strings itself (the line breaks outside
    them are its layout), but not DEL, C1 controls or bidi characters;
    outside strings JSON holds none of them, so the escapes keep the
    document exactly what it was.
    """
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
