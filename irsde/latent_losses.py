"""Training losses of latent Refusion's U-Net autoencoder (official ``LatentModel.optimize_parameters`` in
``codes/config/unet-latent/models/latent_model.py``).

With ``(L_lq, H_lq) = encode(lq)`` and ``(L_gt, _) = encode(gt)``:

* ``rec = L1(decode(L_lq, H_lq), lq)``: the degraded image rebuilt from its own latent and hidden features;
* ``rep = L1(decode(L_gt, H_lq), gt)``: the clean image rebuilt from *its* latent but the *degraded* image's
  hidden features, the pairing used at test time, where the restored latent is decoded with ``H_lq``: what
  differs between the two images (the haze) has to come through the latent;
* ``reg = |mean(L_lq) - mean(lq)| + |std(L_lq) - 0.5 std(lq)|``: keeps the LQ latent's statistics near the
  image's (mean and standard deviation over the whole batch tensor, the standard deviation unbiased as
  ``torch.std``'s default), so the SDE's noise level suits the latent as it suits images in [0, 1].

``loss = rec + rep + 0.001 reg``. The official L1 (``MatchingLoss('l1')``) averages per sample, then over the
batch, which equals the plain mean since all samples share a size. The official ``train.weight`` option (1.0)
is read but never used by this model. The GT's hidden features are computed and discarded, as officially.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Official weights of the three terms (rec, rep, reg) and the target ratio std(L_lq) / std(lq).
REC_WEIGHT = 1.0
REP_WEIGHT = 1.0
REG_WEIGHT = 1e-3
STD_RATIO = 0.5


def latent_statistics_loss(latent: torch.Tensor, image: torch.Tensor, std_ratio: float = STD_RATIO) -> torch.Tensor:
    """|mean(latent) - mean(image)| + |std(latent) - std_ratio * std(image)|, each over the whole tensor."""
    return (latent.mean() - image.mean()).abs() + (latent.std() - image.std() * std_ratio).abs()


def autoencoder_losses(
    net: torch.nn.Module,
    lq: torch.Tensor,
    gt: torch.Tensor,
    rec_weight: float = REC_WEIGHT,
    rep_weight: float = REP_WEIGHT,
    reg_weight: float = REG_WEIGHT,
    std_ratio: float = STD_RATIO,
) -> dict[str, torch.Tensor]:
    """The official autoencoder objective on a (lq, gt) batch in [0, 1]: {"loss", "rec", "rep", "reg"}.

    ``net`` has ``encode(x) -> (latent, hidden)`` and ``decode(latent, hidden)`` (``LatentUNet``).
    """
    latent_lq, hidden_lq = net.encode(lq)
    latent_gt, _ = net.encode(gt)
    rec = F.l1_loss(net.decode(latent_lq, hidden_lq), lq)
    rep = F.l1_loss(net.decode(latent_gt, hidden_lq), gt)
    reg = latent_statistics_loss(latent_lq, lq, std_ratio)
    loss = rec_weight * rec + rep_weight * rep + reg_weight * reg
    return {"loss": loss, "rec": rec, "rep": rep, "reg": reg}
