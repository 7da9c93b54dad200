"""Smoke test of benchmarks/realesrgan_degradation.py in its --quick mode (tiny crops and network)."""

import json
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.realesrgan_degradation import main  # noqa: E402


def test_quick_run_writes_every_cell(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--quick", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["settings"] == result["settings"] and saved["quick"] is True
    cells = saved["degradation"]
    assert set(cells) == {"degrade_x4", "degrade_x2", "degrade_x1", "degrade_x4_official_crop", "draw_parameters"}
    batch, hr = saved["settings"]["batch"], saved["settings"]["hr_size"]
    assert cells["degrade_x4"]["lq_shape"] == [batch, 3, hr // 4, hr // 4]
    assert cells["degrade_x4_official_crop"]["lq_shape"] == [batch, 3, hr // 4, hr // 4]  # cut to the patch
    assert cells["degrade_x1"]["lq_shape"] == [batch, 3, hr, hr]
    step = saved["training_step"]
    assert step["network"]["scale"] == 4 and step["seconds_per_image"] > 0
    for cell in cells.values():
        assert cell["fraction_of_step"] == cell["seconds_per_image"] / step["seconds_per_image"]
