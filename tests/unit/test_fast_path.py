"""What restore.py / evaluate.py add around a restorer: progress bars over steps and tiles, and the fast path
(bf16 autocast + channels_last)."""

import torch

from core.restorer import build_restorer, prepare_for_inference
from core.tiling import tiled_apply
from irsde.module import IRSDEModule
from irsde.nets.unet import ConditionalUNet


def _module() -> IRSDEModule:
    torch.manual_seed(0)
    return IRSDEModule(net=ConditionalUNet(nf=8, depth=2), sde={"max_sigma": 10, "T": 20})


def test_progress_draws_a_bar_per_sampler_step_and_per_tile_with_the_time_left(capsys, monkeypatch):
    import core.progress

    monkeypatch.setattr(core.progress, "is_terminal", lambda stream=None: True)  # the bars of a terminal
    module = prepare_for_inference(_module(), torch.device("cpu"), "32")
    restorer = build_restorer(module, {"sampler": "mr_ode", "steps": 3, "tile": 16, "overlap": 4}, progress=True)
    restorer.restore(torch.rand(1, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    assert "MR-ODE-2:" in err and "/3 [" in err  # the sampler's bar over its 3 steps
    assert "tiles:" in err and "/4 [" in err  # 2 x 2 tiles inside every network evaluation
    assert "<" in err  # tqdm's elapsed<remaining


def test_tiles_bar_does_not_change_the_result():
    x = torch.rand(1, 3, 40, 40)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        quiet = tiled_apply(conv, [x], tile=16, overlap=8)
        loud = tiled_apply(conv, [x], tile=16, overlap=8, progress=True)
    assert torch.equal(quiet, loud)


def test_fast_path_puts_the_network_in_channels_last_and_restores_close_to_float32():
    lq = torch.rand(1, 3, 16, 16)
    fp32 = build_restorer(prepare_for_inference(_module(), torch.device("cpu"), "32"), {"steps": 5})
    fast_module = prepare_for_inference(_module(), torch.device("cpu"), "bf16")
    conv = next(m for m in fast_module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast_module.training
    fast = build_restorer(fast_module, {"steps": 5})
    reference = fp32.restore(lq, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast.restore(lq, generator=torch.Generator().manual_seed(1)).float()
    assert (out - reference).abs().mean() < 0.02  # bf16 rounding only
