"""Fixtures for the service: the real app on a temporary data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tbptt.service.settings import Settings
from tests.service.factories import app_client, wait_ready


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as c:
        wait_ready(c)
        yield c
