"""The samplers and networks on a CUDA device (skipped without one; scripts/gpu_check.sh runs them).

Each network and sampler runs on CUDA in float32 and in bf16 autocast with channels_last, and its CUDA result
is compared with the same computation on the CPU: float32 agrees to rounding, bf16 to bf16 rounding.
"""

from __future__ import annotations

import pytest
import torch

from core.restorer import build_restorer, prepare_for_inference
from diffir.networks import DiffIRS2
from diffpir.prior import GuidedUNet, small_config
from irsde.module import IRSDEModule
from irsde.nets import ConditionalUNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _irsde(seed: int = 0) -> IRSDEModule:
    torch.manual_seed(seed)
    return IRSDEModule(net=ConditionalUNet(nf=16, depth=3), sde={"max_sigma": 10, "T": 100})


def _networks():
    torch.manual_seed(0)
    yield "unet", ConditionalUNet(nf=16, depth=3), lambda x: (x, x, torch.full((x.shape[0],), 50, device=x.device))
    diffir = DiffIRS2(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
                      n_encoder_res=1)
    yield "diffir_s2", diffir, lambda x: (x,)
    guided = GuidedUNet(**small_config(channel_mult=(1, 2), attention_resolutions=(2,), num_head_channels=32))
    yield "guided", guided, lambda x: (x, torch.full((x.shape[0],), 500, device=x.device))


@pytest.mark.parametrize("index", range(3))
def test_network_forward_and_backward_on_cuda_match_the_cpu(index):
    name, net, inputs = list(_networks())[index]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.no_grad():
        cpu = net(*inputs(x))
        cuda = net.to(CUDA)(*inputs(x.to(CUDA)))
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-3, rtol=1e-3, msg=name)
    fast = net.to(memory_format=torch.channels_last).train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = fast(*inputs(x.to(CUDA)))
    out.float().square().mean().backward()
    grads = [p.grad for p in fast.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert (out.float().cpu() - cpu).abs().mean() < 0.05, name


@pytest.mark.parametrize("sampler,options", [("posterior", {"steps": 20}), ("ode", {"steps": 10}),
                                             ("mr_ode", {"steps": 5, "order": 3}), ("mr_sde", {"steps": 5})])
def test_irsde_samplers_on_cuda_match_the_cpu_from_the_same_start(sampler, options):
    lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    results = {}
    for device in (torch.device("cpu"), CUDA):
        restorer = build_restorer(prepare_for_inference(_irsde(), device, "32"), {"sampler": sampler, **options})
        # the start noise and each step's noise come from a CPU generator, so both devices draw the same numbers
        results[device.type] = restorer.restore(lq.to(device), generator=torch.Generator().manual_seed(3)).cpu()
    torch.testing.assert_close(results["cuda"], results["cpu"], atol=2e-3, rtol=0)


def test_fast_path_on_cuda_is_close_to_float32():
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)).to(CUDA)
    fp32 = build_restorer(prepare_for_inference(_irsde(), CUDA, "32"), {"sampler": "mr_ode", "steps": 10})
    fast = build_restorer(prepare_for_inference(_irsde(), CUDA, "bf16"), {"sampler": "mr_ode", "steps": 10})
    reference = fp32.restore(lq, generator=torch.Generator(device=CUDA).manual_seed(5))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = fast.restore(lq, generator=torch.Generator(device=CUDA).manual_seed(5)).float()
    assert (out - reference).abs().mean() < 0.02
