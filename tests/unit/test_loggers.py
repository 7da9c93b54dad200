"""wandb never blocks: offline without a key, online with one, the user's WANDB_MODE always wins."""

import numpy as np

from core import loggers
from core.evaluation import make_panel


def _no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_offline_without_key(monkeypatch, tmp_path):
    _no_key(monkeypatch, tmp_path)
    assert loggers.choose_wandb_mode() == "offline"


def test_online_with_env_key(monkeypatch, tmp_path):
    _no_key(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert loggers.choose_wandb_mode() == "online"


def test_online_with_netrc_key(monkeypatch, tmp_path):
    _no_key(monkeypatch, tmp_path)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert loggers.choose_wandb_mode() == "online"


def test_user_mode_wins(monkeypatch, tmp_path):
    _no_key(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.choose_wandb_mode() == "disabled"


def test_panel_layout():
    lq = np.zeros((4, 4, 3), np.uint8)
    out = np.full((8, 8, 3), 100, np.uint8)
    gt = np.full((8, 8, 3), 200, np.uint8)
    panel = make_panel(lq, out, gt)
    assert panel.shape == (8, 8 * 3 + 2 * 4, 3)
    assert (panel[:, :8] == 0).all() and (panel[:, 12:20] == 100).all() and (panel[:, 24:] == 200).all()
