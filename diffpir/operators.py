"""Degradation operators H for DiffPIR: forward model, adjoint and the data proximal step.

Each operator works on NCHW batches in the sampler's range [-1, 1]. The data step of DiffPIR is

    prox(z, y, ρ) = argmin_x ||y − H x||² + ρ ||x − z||²,

solved in closed form where one exists (inpainting elementwise, blur and blur + decimation by FFT), otherwise
by conjugate gradients on the normal equations (H^T H + ρ I) x = H^T y + ρ z, or by the paper's first-order
step(s) for a non-linear H. The closed forms are exact for any linear H that maps a constant image to the same
constant (a kernel summing to 1, decimation), so solving in [-1, 1] gives the same image as the official code
solving in [0, 1]; inpainting is elementwise and ignores y where the mask is 0, so it does not need that
property.

`measure` is the public helper that simulates an observation: it takes a clean image in [0, 1] and returns y
in [0, 1] with AWGN of std 2σ_n in [-1, 1] units (σ_n in [0, 1] units), as the official scripts do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from core.errors import ConfigError, DataError
from diffpir.kernels import KERNEL_SUM_TOLERANCE, bicubic_kernel

Rho = float | torch.Tensor


def _require_image(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"The {what} must be an NCHW tensor (4-D), got {shape}")


def _per_sample(rho: Rho, ref: torch.Tensor) -> Rho:
    """ρ as a float or as a (B, 1, 1, 1) tensor, so every image of a batch may have its own weight."""
    if isinstance(rho, torch.Tensor):
        if rho.numel() == 1:
            rho = float(rho)
        elif rho.numel() == ref.shape[0]:
            return rho.to(device=ref.device, dtype=ref.dtype).reshape(-1, 1, 1, 1)
        else:
            raise ValueError(f"rho has {rho.numel()} values for a batch of {ref.shape[0]} images")
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    return float(rho)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image inner product, shape (B,)."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient_prox(
    op: Operator, z: torch.Tensor, y: torch.Tensor, rho: Rho, iterations: int = 100, tol: float = 1e-6
) -> torch.Tensor:
    """Solve (A^T A + ρ I) x = A^T (y − b) + ρ z per image by conjugate gradients, starting from z.

    H may be affine, H x = A x + b: a linear user function written for [0, 1] images is affine in [-1, 1].
    b = H(0) is measured once and the adjoint of A is `op.adjoint`. Stops when every image's residual norm is
    below tol times the norm of its right-hand side. The condition number grows like 1/ρ: in float32, with
    ρ ~ 1e-7 (t near T, σ_n = 0.05), CG stops short of the exact deconvolution, which acts as a mild
    regulariser; the closed forms have no such limit.
    """
    rho = _per_sample(rho, z)
    offset = op.forward(torch.zeros_like(z))

    def normal_matrix(v: torch.Tensor) -> torch.Tensor:
        return op.adjoint(op.forward(v) - offset) + rho * v

    b = op.adjoint(y - offset) + rho * z
    x = z.clone()
    r = b - normal_matrix(x)
    p = r.clone()
    rs = _dot(r, r)
    threshold = tol**2 * _dot(b, b)
    for _ in range(iterations):
        if bool((rs <= threshold).all()):
            break
        Ap = normal_matrix(p)
        pAp = _dot(p, Ap)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(torch.finfo(pAp.dtype).tiny), torch.zeros_like(rs))
        x = x + alpha.view(-1, 1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1, 1) * Ap
        rs_next = _dot(r, r)
        beta = torch.where(rs > 0, rs_next / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        p = r + beta.view(-1, 1, 1, 1) * p
        rs = rs_next
    return x


def gradient_prox(
    op: Operator,
    z: torch.Tensor,
    y: torch.Tensor,
    rho: Rho,
    iterations: int = 1,
    step_size: float | None = None,
) -> torch.Tensor:
    """Gradient steps on ½||y − H(x)||² + ½ρ||x − z||² from x = z; H may be non-linear (autograd).

    With the default step 1/ρ the first step is x = z − H'(z)^T (H(z) − y) / ρ, the paper's first-order
    alternative to the closed form (the official `sub_1_analytic=False` branch). Further steps with that step
    size converge only when ρ exceeds the largest eigenvalue of H'^T H'; pass a smaller step_size otherwise.
    """
    rho = _per_sample(rho, z)
    step = 1.0 / rho if step_size is None else step_size
    x = z.detach().clone()
    for _ in range(iterations):
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            misfit = 0.5 * (op.forward(x_var) - y).pow(2).sum()
            (grad,) = torch.autograd.grad(misfit, x_var)
        x = x - step * (grad + rho * (x - z))
    return x


class Operator:
    """A degradation y = H x (+ noise). Subclasses give forward and adjoint; prox defaults to CG."""

    #: Whether initial_estimate(y) still carries the measurement noise (then the partial start allows for it).
    init_carries_measurement_noise: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Rho) -> torch.Tensor:
        """argmin_x ||y − H x||² + ρ ||x − z||² (ρ a float or one value per image)."""
        return conjugate_gradient_prox(self, z, y, rho)

    def image_shape(self, measurement_shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the image x behind a measurement of the given shape."""
        return tuple(measurement_shape)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """A rough image from y, where the sampler's partial start begins (y itself when shapes agree)."""
        if tuple(y.shape) == self.image_shape(y.shape):
            return y
        return self.adjoint(y)

    def measure(
        self, x_clean: torch.Tensor, sigma_n: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Simulate y from clean x in [0, 1]: H x + AWGN of std 2σ_n in [-1, 1]; y in [0, 1], unclipped."""
        _require_image(x_clean, "clean image")
        if sigma_n < 0:
            raise ConfigError(f"sigma_n={sigma_n} must be >= 0")
        y = self.forward(x_clean * 2.0 - 1.0)
        if sigma_n > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = y + 2.0 * sigma_n * noise
        return (y + 1.0) / 2.0


class Inpainting(Operator):
    """y = m ⊙ x with m = 1 on known pixels. Data step (m y + ρ z) / (m² + ρ): the official
    (m y + ρ z) / (m + ρ) for a binary mask, and still the exact minimiser for a soft one.

    mask: HW, CHW or NCHW, with N in {1, B} and C in {1, channels of the image}.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        mask = torch.as_tensor(mask)
        if mask.ndim not in (2, 3, 4):
            raise DataError(f"The inpainting mask must be HW, CHW or NCHW, got shape {tuple(mask.shape)}")
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
        self.mask = mask.float()

    def _mask_for(self, x: torch.Tensor) -> torch.Tensor:
        _require_image(x, "image")
        n, c, h, w = self.mask.shape
        if (h, w) != tuple(x.shape[-2:]):
            raise DataError(
                f"The inpainting mask is {h}x{w} but the image is {x.shape[-2]}x{x.shape[-1]}: "
                f"the mask must have the image's height and width"
            )
        if n not in (1, x.shape[0]) or c not in (1, x.shape[1]):
            raise DataError(
                f"The inpainting mask has batch {n} and {c} channels; the images have batch {x.shape[0]} and "
                f"{x.shape[1]} channels (use 1 to share the mask)"
            )
        return self.mask.to(device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mask_for(x) * x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._mask_for(y) * y

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Rho) -> torch.Tensor:
        m = self._mask_for(z)
        rho = _per_sample(rho, z)
        return (m * y + rho * z) / (m * m + rho)

    def measure(
        self, x_clean: torch.Tensor, sigma_n: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """As Operator.measure, with unknown pixels set to 0 (black) as in the official script."""
        y = super().measure(x_clean, sigma_n, generator)
        return torch.where(self._mask_for(y) > 0, y, torch.zeros_like(y))


class _FourierDegradation(Operator):
    """y = S_s (k ⊛ x): circular convolution with k, then keep the upper-left pixel of each s x s block.

    Everything is diagonal in the Fourier domain, up to the aliasing of decimation, so the data step is exact:
    x = z + A^T (A A^T + ρ I)^{-1} (y − A z), where A A^T acts on the low-resolution spectrum as the mean of
    |K|² over the s² aliased frequencies (Zhao et al. 2016; the USRNet / official `data_solution` formula,
    written with the push-through identity so that nothing is divided by ρ, which reaches 1e-10 early in
    sampling). Computed in float64 and returned in the input's dtype.
    """

    def __init__(self, kernel: torch.Tensor, scale: int) -> None:
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2:
            raise DataError(f"The blur kernel must be 2-D (h, w), got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all():
            raise DataError("The blur kernel contains NaN or inf values")
        total = float(kernel.sum())
        if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
            raise DataError(
                f"The blur kernel sums to {total:.6g}, not 1 (tolerance {KERNEL_SUM_TOLERANCE}); divide it "
                f"by its sum (load_kernel(path, normalize=True) does)"
            )
        self.kernel = kernel
        self.scale = scale
        self._otf_cache: dict[tuple, torch.Tensor] = {}

    def _otf(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """The kernel's transfer function on a height x width grid, origin (h//2, w//2) moved to (0, 0)."""
        key = (height, width, str(device))
        if key not in self._otf_cache:
            kh, kw = self.kernel.shape
            if kh > height or kw > width:
                raise DataError(
                    f"The {kh}x{kw} blur kernel does not fit the {height}x{width} image: circular blur needs "
                    f"a kernel no larger than the image"
                )
            padded = torch.zeros(height, width, dtype=torch.float64, device=device)
            padded[:kh, :kw] = self.kernel.to(device)
            padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._otf_cache[key] = torch.fft.fft2(padded)
        return self._otf_cache[key]

    def _check_high_res(self, x: torch.Tensor, what: str) -> None:
        _require_image(x, what)
        s = self.scale
        height, width = x.shape[-2:]
        for name, size in (("height", height), ("width", width)):
            if size % s:
                raise DataError(
                    f"The {what} {name} {size} is not divisible by the scale factor {s}: crop the image to a "
                    f"multiple of {s} (mod-crop) first"
                )

    def image_shape(self, measurement_shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        *lead, h, w = measurement_shape
        return (*lead, h * self.scale, w * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_high_res(x, "image")
        otf = self._otf(x.shape[-2], x.shape[-1], x.device)
        blurred = torch.fft.ifft2(otf * torch.fft.fft2(x.double())).real
        return blurred[..., :: self.scale, :: self.scale].to(x.dtype)

    def _zero_upsample(self, y: torch.Tensor) -> torch.Tensor:
        s = self.scale
        up = y.new_zeros((*y.shape[:-2], y.shape[-2] * s, y.shape[-1] * s), dtype=torch.float64)
        up[..., ::s, ::s] = y.double()
        return up

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _require_image(y, "measurement")
        up = self._zero_upsample(y)
        otf = self._otf(up.shape[-2], up.shape[-1], y.device)
        return torch.fft.ifft2(otf.conj() * torch.fft.fft2(up)).real.to(y.dtype)

    def _alias_mean(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Mean over the s² frequencies that decimation folds onto each low-resolution frequency."""
        s = self.scale
        h, w = spectrum.shape[-2] // s, spectrum.shape[-1] // s
        return spectrum.reshape(*spectrum.shape[:-2], s, h, s, w).mean(dim=(-4, -2))

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Rho) -> torch.Tensor:
        self._check_high_res(z, "image")
        _require_image(y, "measurement")
        expected = (z.shape[-2] // self.scale, z.shape[-1] // self.scale)
        if tuple(y.shape[-2:]) != expected:
            raise DataError(
                f"The measurement is {y.shape[-2]}x{y.shape[-1]} but the {z.shape[-2]}x{z.shape[-1]} image "
                f"needs {expected[0]}x{expected[1]} at scale {self.scale}"
            )
        rho = _per_sample(rho, z.double())
        otf = self._otf(z.shape[-2], z.shape[-1], z.device)
        residual = y.double() - self.forward(z.double())
        gram = self._alias_mean(otf.abs() ** 2)  # A A^T on the low-resolution spectrum
        weights = torch.fft.fft2(residual) / (gram + rho)
        correction = otf.conj() * weights.repeat(1, 1, self.scale, self.scale)
        return (z.double() + torch.fft.ifft2(correction).real).to(z.dtype)


class Blur(_FourierDegradation):
    """Circular blur y = k ⊛ x (the official degradation uses ndimage.convolve with mode 'wrap')."""

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__(kernel, scale=1)


class SuperResolution(_FourierDegradation):
    """y = (k ⊛ x)[::s, ::s]: circular blur, then upper-left decimation, as the official `sr_mode='blur'`.

    kernel defaults to `bicubic_kernel(scale)`, with which y equals antialiased bicubic downscaling away from
    the borders (the official loads estimated 25x25 kernels of the same degradation from
    kernels_bicubicx234.mat). The official paper setting is scale 2, 3 or 4; any integer >= 2 works.
    """

    init_carries_measurement_noise = False

    def __init__(self, scale: int, kernel: torch.Tensor | None = None) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 2:
            raise ConfigError(f"Super-resolution scale={scale} must be an integer >= 2 (the paper: 2, 3, 4)")
        scale = int(scale)
        super().__init__(bicubic_kernel(scale) if kernel is None else kernel, scale=scale)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling of y, the official starting point (cv2 INTER_CUBIC)."""
        return F.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)


class BackProjectionSR(Operator):
    """SR by antialiased bicubic downscaling, iterative back-projection as data step (official 'cubic').

    prox is not the exact minimiser: it runs `iterations` steps x ← x + γ·up(y − down(x)) / (1 + ρ) from z,
    with nearest-neighbour `up` and γ = 0.01, as the official code. The adjoint (exact, via autograd) is there
    for generic use. Torch's antialiased bicubic crops the weights at the border where the official resizer
    reflects.
    """

    init_carries_measurement_noise = False

    def __init__(self, scale: int, gamma: float = 0.01, iterations: int = 1) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 2:
            raise ConfigError(f"Super-resolution scale={scale} must be an integer >= 2 (the paper: 2, 3, 4)")
        self.scale = int(scale)
        self.gamma = gamma
        self.iterations = iterations

    def _check_high_res(self, x: torch.Tensor, what: str) -> None:
        _require_image(x, what)
        for name, size in (("height", x.shape[-2]), ("width", x.shape[-1])):
            if size % self.scale:
                raise DataError(
                    f"The {what} {name} {size} is not divisible by the scale factor {self.scale}: crop the "
                    f"image to a multiple of {self.scale} (mod-crop) first"
                )

    def image_shape(self, measurement_shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        *lead, h, w = measurement_shape
        return (*lead, h * self.scale, w * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_high_res(x, "image")
        size = (x.shape[-2] // self.scale, x.shape[-1] // self.scale)
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _require_image(y, "measurement")
        origin = y.new_zeros(self.image_shape(y.shape))
        _, pullback = torch.func.vjp(self.forward, origin)
        return pullback(y)[0]

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Rho) -> torch.Tensor:
        rho = _per_sample(rho, z)
        x = z
        for _ in range(self.iterations):
            residual = F.interpolate(y - self.forward(x), scale_factor=self.scale, mode="nearest")
            x = x + self.gamma * residual / (1.0 + rho)
        return x

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)


class GenericOperator(Operator):
    """Wrap any differentiable function as a DiffPIR operator; the adjoint comes from torch.func.vjp.

    fn_range: "zero_one" when fn expects and returns [0, 1] images (the public convention; the operator then
    applies x ↦ 2·fn((x + 1)/2) − 1 inside the sampler), or "minus_one_one" when fn already works in [-1, 1].
    prox_method: "cg" (exact for a linear, or affine, fn: conjugate gradients, `iterations` default 100) or
    "gradient" (the paper's first-order step, `iterations` default 1; needed for a non-linear fn).
    image_shape: (C, H, W) of x when it differs from the measurement's shape (for the start and the adjoint).
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        fn_range: Literal["zero_one", "minus_one_one"] = "zero_one",
        prox_method: Literal["cg", "gradient"] = "cg",
        iterations: int | None = None,
        tol: float = 1e-6,
        step_size: float | None = None,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if fn_range not in ("zero_one", "minus_one_one"):
            raise ConfigError(f"fn_range={fn_range!r} must be 'zero_one' or 'minus_one_one'")
        if prox_method not in ("cg", "gradient"):
            raise ConfigError(f"prox_method={prox_method!r} must be 'cg' or 'gradient'")
        self.fn = fn
        self.fn_range = fn_range
        self.prox_method = prox_method
        self.iterations = iterations if iterations is not None else (100 if prox_method == "cg" else 1)
        self.tol = tol
        self.step_size = step_size
        self._image_chw = tuple(image_shape) if image_shape is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn_range == "minus_one_one":
            return self.fn(x)
        return 2.0 * self.fn((x + 1.0) / 2.0) - 1.0

    def image_shape(self, measurement_shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
        if self._image_chw is None:
            return tuple(measurement_shape)
        return (measurement_shape[0], *self._image_chw)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # The vjp of an affine map is the adjoint of its linear part, wherever it is taken.
        origin = y.new_zeros(self.image_shape(y.shape))
        _, pullback = torch.func.vjp(self.forward, origin)
        return pullback(y)[0]

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: Rho) -> torch.Tensor:
        if self.prox_method == "cg":
            return conjugate_gradient_prox(self, z, y, rho, iterations=self.iterations, tol=self.tol)
        return gradient_prox(self, z, y, rho, iterations=self.iterations, step_size=self.step_size)
