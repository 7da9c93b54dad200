"""What the IR-SDE network predicts, seen by the losses and samplers as a noise prediction.

The official network predicts the noise eps (``prediction="noise"``). Recovering x0 from it divides by
e^{-u_t} (1/eps = 200 at t = T for the deraining SDE), so a small or young network's errors reach x0 amplified,
which is why the official recipe needs hundreds of thousands of steps. The non-official options let the
network predict the clean image itself (``"x0"``) or its difference from the network's condition
(``"residual"``: x0 - mu for IR-SDE, x0 - x_t for the denoising variant); the output is converted to the
noise that would have produced x_t from that x0,

    eps = (x_t - mu_bar_t(x0_hat)) / sigma_bar_t,

so every loss and sampler runs unchanged, and the maximum-likelihood loss on the reverse-step mean becomes a
weighted L1 on x0_hat whose weights are at most 1 (well conditioned at every t).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from irsde.sde import IRSDE

PREDICTIONS = ("noise", "x0", "residual")

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"model.prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}")
    return prediction


def as_noise_model(net: Model, sde: IRSDE, prediction: str = "noise") -> Model:
    """``net`` as a noise predictor ``model(x_t, condition, t) -> eps`` for the losses and samplers."""
    if check_prediction(prediction) == "noise":
        return net

    def noise(x_t: Tensor, condition: Tensor, t: Tensor) -> Tensor:
        # float32 whatever the network's autocast dtype: the division by sigma_bar_t (small near t = 0) would
        # otherwise turn bf16 rounding of x0_hat into large noise errors
        out = net(x_t, condition, t).float()
        x0 = out + condition.float() if prediction == "residual" else out
        # for IR-SDE the condition is mu; the denoising SDE's mean is x0 itself and ignores it
        return sde.noise_from_x0(x_t.float(), x0, condition.float(), t)

    return noise
