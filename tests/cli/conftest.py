"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.campaign_cli import CampaignCli


@pytest.fixture
def run(db_url: str, tmp_path: Path) -> CampaignCli:
    return CampaignCli(db_url, tmp_path)
