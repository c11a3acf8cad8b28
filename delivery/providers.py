"""One entry point for every webhook provider, so a route needs no table of its own."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime

from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import EventBatch

#: ``POST /api/v1/events/{provider}`` -> the module that verifies and parses it.
WEBHOOK_PROVIDERS = {
    "ses": "promomail.delivery.ses",
    "sendgrid": "promomail.delivery.sendgrid",
    "mailgun": "promomail.delivery.mailgun",
    "postmark": "promomail.delivery.postmark",
    "promomail": "promomail.delivery.own",
}


def verify_and_parse(
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    config: WebhookConfig,
    *,
    now: datetime,
) -> EventBatch:
    """``provider``'s ``verify_and_parse``; ``KeyError`` for a provider that does not exist."""
    module = importlib.import_module(WEBHOOK_PROVIDERS[provider])
    batch: EventBatch = module.verify_and_parse(body, headers, config, now=now)
    return batch
