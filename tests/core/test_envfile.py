"""`make run` generates an API key once and keeps it."""

from pathlib import Path

import pytest

from app.core.envfile import ensure_env

ROOT = Path(__file__).resolve().parents[2]


def test_generates_a_key_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY", raising=False)
    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    key = ensure_env(tmp_path)
    assert key and len(key) >= 32
    assert f"API_KEY={key}\n" in (tmp_path / ".env").read_text()
    assert ensure_env(tmp_path) is None
    lines = (tmp_path / ".env").read_text().splitlines()
    assert [line for line in lines if line.startswith("API_KEY=")] == [f"API_KEY={key}"]
    assert "BINANCE_API_KEY=" in lines  # another setting that ends in API_KEY is left alone


def test_keeps_a_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-the-environment-123")
    (tmp_path / ".env.example").write_text("API_KEY=\n")
    assert ensure_env(tmp_path) is None
    assert (tmp_path / ".env").read_text() == "API_KEY=\n"


def test_every_setting_is_documented_in_env_example() -> None:
    from app.core.settings import Settings

    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {name.upper() for name in Settings.model_fields} == documented
