"""Published Jinja2 sandbox escapes, and how the sandbox refuses each."""

from __future__ import annotations

import pytest

from promomail.templating.errors import InvalidTemplate, RecipientFailed
from promomail.templating.mailing.sources import PreviewCodes
from promomail.templating.template.client import Client
from promomail.templating.template.message import MessageTemplate

#: Replaced in every payload by the path of a file the payload tries to create.
MARKER = "MARKER_PATH"


def payload_client(**fields: str) -> Client:
    """A recipient for payloads to run against, with the given fields."""
    return Client(
        "cust-1", {"id": "cust-1", "email": "ada@example.com", **fields}, PreviewCodes(None, {})
    )


# Each payload is a published Jinja2 server-side template injection or sandbox
# escape; each tries to create MARKER_PATH, read the secret environment
# variable, or reach Python internals it could use to do so.
ESCAPES = {
    # str.format / format_map: the formatter's own attribute lookups (pre-2.8.1 style).
    "format-class": "{{ '{0.__class__.__init__.__globals__}'.format(client) }}",
    "format-private": "{{ '{0._source}'.format(client) }}",
    "format-map": "{{ '{c.__class__.__mro__}'.format_map({'c': client}) }}",
    "format-self": "{{ '{0.__init__.__globals__[os].environ}'.format(self) }}",
    # CVE-2025-27516: the attr filter fetching str.format unwrapped.
    "attr-format": "{{ '{0.__class__.__init__.__globals__}'|attr('format')(client) }}",
    "attr-format-map": "{{ '{c.__class__}'|attr('format_map')({'c': client}) }}",
    # CVE-2024-56326: a stored reference to str.format called later.
    "stored-format": ("{% set f = '{0.__init__.__globals__[__builtins__]}'.format %}{{ f(self) }}"),
    "stored-format-filter": (
        "{% set f = '{0.__class__.__base__.__subclasses__}'|attr('format') %}{{ f(client) }}"
    ),
    # Walks from the default globals and objects a template can reach.
    "cycler": "{{ cycler.__init__.__globals__.os.popen('touch MARKER_PATH').read() }}",
    "joiner": "{{ joiner.__init__.__globals__.os.system('touch MARKER_PATH') }}",
    "namespace": "{{ namespace.__init__.__globals__.os.popen('touch MARKER_PATH').read() }}",
    "namespace-instance": "{% set ns = namespace() %}{{ ns.__init__.__globals__.os }}",
    "namespace-dict": "{% set ns = namespace(a=1) %}{{ ns.__dict__ }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('touch MARKER_PATH').read() }}",
    "self-globals": (
        "{{ self.__init__.__globals__.__builtins__.__import__('os')"
        ".popen('touch MARKER_PATH').read() }}"
    ),
    "self-context": "{{ self._TemplateReference__context.environment }}",
    "self-dict": "{{ self.__dict__ }}",
    "client-class": "{{ client.__class__.__mro__[1].__subclasses__() }}",
    "client-private": "{{ client._source }}",
    "client-private-item": "{{ client['_fields'] }}",
    "client-dunder-item": "{{ client['__class__'] }}",
    "client-attr-filter": "{{ client|attr('__class__') }}",
    "client-method-self": "{{ client.promocode.__self__._source }}",
    "client-method-globals": (
        "{{ client.promocode.__func__.__globals__['__builtins__']['open']('MARKER_PATH', 'w') }}"
    ),
    "range-globals": "{{ range.__globals__['__builtins__'] }}",
    "range-class": "{{ range.__class__.__mro__ }}",
    "dict-mro": "{{ dict.mro()[-1].__subclasses__() }}",
    "dict-class": "{{ dict.__class__.__base__.__subclasses__() }}",
    "str-subclasses": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == 'Popen' %}{{ c('touch MARKER_PATH', shell=True) }}{% endif %}"
        "{% endfor %}"
    ),
    "tuple-subclasses": "{{ ().__class__.__base__.__subclasses__() }}",
    "list-item-class": "{{ []['__class__'] }}",
    "escaped-underscores": "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "int-class": "{{ (1).__class__.__base__ }}",
    "method-self": "{{ ''.format_map.__self__ }}",
    "reduce": "{{ client.__reduce_ex__(2) }}",
    # Lookups that exist in web frameworks' template contexts, not here.
    "request": (
        "{{ request.application.__globals__.__builtins__.__import__('os')"
        ".popen('touch MARKER_PATH').read() }}"
    ),
    "config": "{{ config.__class__.__init__.__globals__['os'].environ }}",
    "config-items": "{{ config.items() }}",
    "url-for": "{{ url_for.__globals__['os'].environ }}",
    "flashed": "{{ get_flashed_messages.__globals__ }}",
    # Reading files through template loading: partials come from the template's folder only.
    "include": "{% include '/etc/passwd' %}",
    "extends": "{% extends '/etc/passwd' %}",
    "import": "{% from '/etc/passwd' import root %}{{ root }}",
}


def refusal(source: str) -> str:
    """Why a payload does not run: refused when the template is read, or its render fails."""
    try:
        template = MessageTemplate("payload.j2", source)
    except InvalidTemplate as exc:
        return str(exc)
    with pytest.raises(RecipientFailed) as failed:
        template.render({"client": payload_client()})
    return str(failed.value)
