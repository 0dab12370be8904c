"""The sample configuration the README shows loads; flags win over the file; a bad file
names the key and the reason."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aquavolt.collector.cli import build_config, register
from aquavolt.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "collector" / "collector.sample.yaml"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["collector", "run", *argv])


def test_sample_config_loads_and_flags_win() -> None:
    cfg = build_config(_args("--config", str(SAMPLE), "--share-group", "other", "--metrics-port", "0"))
    assert cfg.share_group == "other" and cfg.metrics_port == 0
    assert cfg.batch_points == 5000 and cfg.session_expiry_s == 604800
    assert cfg.influx_url == "http://127.0.0.1:8086/aquavolt"


def test_bad_config_names_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("batch_points: 0\nshare_group: 'a/b'\n")
    with pytest.raises(ConfigError) as exc:
        build_config(_args("--config", str(bad)))
    text = str(exc.value)
    assert "batch_points" in text and "share_group" in text and str(bad) in text
