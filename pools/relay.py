"""The SMTP relay: one URL form and one way to open a session.

Low-stock notices and ``send`` reach their relay through the same
``PROMOMAIL_SMTP_URL``, so they read it with one parser and open a session
the same way:

* ``smtp://[user:password@]host[:port]`` (port 25): STARTTLS when the relay
  offers it; ``?starttls=require`` refuses to go on without it.
  ``smtp+starttls://…`` (port 587) is the same as ``?starttls=require``.
* ``smtps://…`` (port 465): TLS from the start.
* ``?from=address`` sets the sender of low-stock notices.

Certificates are verified against the system's trust store, or against the
CA file in ``PROMOMAIL_SMTP_CA`` alone when it is set. The password never
appears in a message: a relay is shown as :attr:`SmtpRelay.shown`.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qs, unquote, urlsplit

from promomail.pools.errors import NamesSettings, PromomailError

SMTP_URL_ENV = "PROMOMAIL_SMTP_URL"
SMTP_CA_ENV = "PROMOMAIL_SMTP_CA"


class RelayError(PromomailError):
    """The relay cannot be used: a bad URL, no TLS where it is required, a refused login."""


class NoRelay(RelayError, NamesSettings):
    """No relay was named: the message names the option (or variable) that names one."""


class InvalidSmtpUrl(RelayError, ValueError):
    """The SMTP URL is not one promomail reads (a ValueError too, as URL parsers raise)."""


class RelayRefusedLogin(RelayError):
    """The relay refused the user and password, or asks for a login none was given for."""


class TlsMode(StrEnum):
    #: STARTTLS when the relay offers it, plain SMTP when it does not.
    STARTTLS_IF_OFFERED = "starttls-if-offered"
    #: STARTTLS or nothing.
    STARTTLS = "starttls"
    #: TLS from the first byte (``smtps``).
    TLS = "tls"


_SCHEMES = {
    "smtp": (25, TlsMode.STARTTLS_IF_OFFERED),
    "smtp+starttls": (587, TlsMode.STARTTLS),
    "smtps": (465, TlsMode.TLS),
}
_QUERY_KEYS = ("from", "starttls")


def _redacted(url: str) -> str:
    """``url`` as it may be shown: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


@dataclass(frozen=True)
class SmtpRelay:
    host: str
    port: int
    tls: TlsMode
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The notices' sender from ``?from=``, when given.
    sender: str | None = None

    @classmethod
    def parse(cls, url: str) -> SmtpRelay:
        shown = _redacted(url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES or not parts.hostname:
            raise InvalidSmtpUrl(
                f"{shown!r} is not an SMTP URL (smtp://[user:password@]host[:port], "
                "smtps://… or smtp+starttls://…)"
            )
        default_port, tls = _SCHEMES[scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise InvalidSmtpUrl(f"{shown!r}: the port is not a number from 1 to 65535") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_QUERY_KEYS))
        if unknown:
            raise InvalidSmtpUrl(
                f"{shown!r}: unknown setting {unknown[0]!r} (an SMTP URL may say "
                "?starttls=require and ?from=address)"
            )
        starttls = query.get("starttls", [])
        if starttls:
            if starttls != ["require"]:
                raise InvalidSmtpUrl(f"{shown!r}: starttls may only be 'require'")
            if tls is TlsMode.TLS:
                raise InvalidSmtpUrl(f"{shown!r}: smtps is TLS from the start, not STARTTLS")
            tls = TlsMode.STARTTLS
        senders = query.get("from")
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            sender=senders[0] if senders else None,
        )

    @property
    def shown(self) -> str:
        """The relay as messages name it: never the password."""
        scheme = "smtps" if self.tls is TlsMode.TLS else "smtp"
        user = f"{self.user}@" if self.user is not None else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def open(self, *, timeout: float, context: ssl.SSLContext | None = None) -> smtplib.SMTP:
        """A session ready for ``MAIL FROM``: TLS as the URL asks, logged in when it names a user.

        Raises :class:`RelayError` for what the relay refuses (STARTTLS missing
        where required, the login), and lets connection errors (``OSError``,
        ``smtplib.SMTPException``) through for the caller to judge.
        """
        if context is None:
            context = tls_context()
        client: smtplib.SMTP
        if self.tls is TlsMode.TLS:
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=timeout)
        try:
            client.ehlo_or_helo_if_needed()
            if self.tls is not TlsMode.TLS:
                if client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                elif self.tls is TlsMode.STARTTLS:
                    raise RelayError(
                        f"the relay {self.shown} does not offer STARTTLS, and the URL requires it"
                    )
            if self.user is not None:
                self._login(client)
        except BaseException:
            client.close()
            raise
        return client

    def _login(self, client: smtplib.SMTP) -> None:
        try:
            client.login(self.user or "", self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayRefusedLogin(
                f"the relay {self.shown} refused the login of {self.user!r}: "
                f"{exc.smtp_code} {_answer_text(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            secure = (
                " over this connection (no TLS)"
                if client.sock is not None and not isinstance(client.sock, ssl.SSLSocket)
                else ""
            )
            raise RelayRefusedLogin(
                f"the relay {self.shown} offers no login{secure}, and the URL names a user"
            ) from None


def _answer_text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return " ".join(text.split())


def tls_context() -> ssl.SSLContext:
    """Verifying context: the system's trust store, or ``PROMOMAIL_SMTP_CA`` alone."""
    cafile = os.environ.get(SMTP_CA_ENV) or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RelayError(
            f"{SMTP_CA_ENV} {cafile}: cannot be read as CA certificates: {reason}"
        ) from exc


def relay_from_environment(url: str | None = None) -> SmtpRelay:
    """The relay of ``url``, else of ``PROMOMAIL_SMTP_URL``; RelayError when neither is set."""
    url = url or os.environ.get(SMTP_URL_ENV)
    if not url:
        raise NoRelay(f"no SMTP relay configured: give {{smtp}} URL or set {SMTP_URL_ENV}", "smtp")
    return SmtpRelay.parse(url)
