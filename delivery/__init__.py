"""After the render: sending its messages through an SMTP relay, and hearing back.

:mod:`delivery.sending` sends a render's output (:mod:`delivery.outgoing`)
through an SMTP relay; each service's webhook (:mod:`delivery.ses`,
:mod:`delivery.sendgrid`, :mod:`delivery.mailgun`, :mod:`delivery.postmark`,
:mod:`delivery.own`) and bounce files (:mod:`delivery.files`,
:mod:`delivery.dsn`) become :class:`~delivery.events.DeliveryEvent` values;
the store applies them. Depends on :mod:`pools` alone: it reads the render's output files,
never ``templating``'s internals.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): the render's ``.eml`` writer, which uses
:mod:`delivery.message`, loads no SMTP client, and a command that imports a
bounce file does not load the cryptography the webhooks need.
"""

from __future__ import annotations

from promomail.pools.lazy_exports import lazy_exports

#: Every public name, by the module it lives in: the one table. Public means
#: used by another package or a front end; the rest stays internal (tests
#: import it from its module). ``__all__``,
#: the lookup on first use and the type checkers' stub
#: (``delivery/__init__.pyi``, written by ``promomail.pools.lazy_exports.write_stubs()``)
#: are made from it.
EXPORTS: dict[str, tuple[str, ...]] = {
    "promomail.delivery.config": ("WebhookConfig",),
    "promomail.delivery.events": (
        "DeliveryError",
        "NotConfigured",
        "SnsUnreachable",
        "TopicNotAllowed",
        "UnreadableBody",
        "Unverified",
    ),
    "promomail.delivery.files": ("import_event_files",),
    "promomail.delivery.message": ("build_email", "sender_address"),
    "promomail.delivery.outgoing": ("read_output",),
    "promomail.delivery.providers": ("verify_and_parse",),
    "promomail.delivery.send_records": ("Outcome", "SendSummary"),
    "promomail.delivery.sending": ("parse_duration", "send_messages"),
    "promomail.pools.relay": ("relay_from_environment",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS, globals())
