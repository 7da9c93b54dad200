"""core.ema.ema_decay: the official IR-SDE EMA (lucidrains' ema_pytorch) and the suite's plain schedule."""

import itertools
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from core.cli import CONFIG_DIR
from core.ema import EMA_DEFAULTS, ema_decay, ema_update, make_ema_copy

OFFICIAL = {**EMA_DEFAULTS, "style": "ema_pytorch", "decay": 0.995, "every": 10}  # EMA(model, 0.995, update_every=10)
STEPS = 3000


class ReferenceEMA:
    """ema_pytorch's EMA.update() (0.1.x - 0.6.3; `early_init`: the lazy-init order of 0.6.4 and later) on a list
    of floats, written from the library's semantics: a call counter read before its increment, work only on
    multiples of update_every, copies while it is <= update_after_step, one more copy the first time past it
    (`initted`), then a lerp with the decay computed from the incremented counter."""

    def __init__(self, value, beta, update_every=10, update_after_step=100, inv_gamma=1.0, power=2 / 3,
                 min_value=0.0, early_init=False):
        self.ema, self.beta = list(value), beta
        self.update_every, self.update_after_step = update_every, update_after_step
        self.inv_gamma, self.power, self.min_value, self.early_init = inv_gamma, power, min_value, early_init
        self.step, self.initted, self.last_decay = 0, False, None

    def current_decay(self):
        epoch = max(self.step - self.update_after_step - 1, 0)
        if epoch <= 0:
            return 0.0
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        return min(max(value, self.min_value), self.beta)

    def update(self, online):
        step = self.step
        self.step += 1
        self.last_decay = None
        if step % self.update_every != 0:
            return
        if self.early_init and not self.initted:
            self.ema, self.initted, self.last_decay = list(online), True, 0.0
            return
        if step <= self.update_after_step:
            self.ema, self.last_decay = list(online), 0.0
            return
        first = not self.initted
        if first:
            self.ema, self.initted = list(online), True
        decay = self.current_decay()
        self.ema = [e - (e - o) * (1 - decay) for e, o in zip(self.ema, online)]
        self.last_decay = 0.0 if first else decay  # a lerp right after the copy leaves the copy


def online_weights(step):
    """The 'parameters' after optimizer step `step`: a drifting, wiggling pair of scalars of size ~1."""
    return [math.sin(step / 40) + 0.3 * math.cos(step / 3), 0.5 * math.cos(step / 90) - step / 10000]


def set_linear(net, values):
    with torch.no_grad():
        net.weight.fill_(values[0])
        net.bias.fill_(values[1])


def run_suite(cfg, steps=STEPS):
    """The suite's loop: Lightning's global_step g after each optimizer step, ema_decay + ema_update."""
    net = nn.Linear(1, 1)
    set_linear(net, online_weights(0))
    ema = make_ema_copy(net)
    for g in range(1, steps + 1):
        set_linear(net, online_weights(g))
        decay = ema_decay(g, cfg)
        if decay is not None:
            ema_update(ema, net, decay)
        yield g, decay, [ema.weight.item(), ema.bias.item()]


def test_matches_ema_pytorch_at_every_step():
    ref = ReferenceEMA(online_weights(0), beta=0.995, update_every=10)
    moved = 0
    for g, decay, ema in run_suite(OFFICIAL):
        ref.update(online_weights(g))
        assert ema == pytest.approx(ref.ema, abs=1e-6, rel=0), g
        assert (decay is None) == (ref.last_decay is None), g
        if decay is not None:
            assert decay == pytest.approx(ref.last_decay, abs=1e-12), g
        moved += decay is not None and decay > 0
    assert moved == (STEPS - 121) // 10 + 1  # lerps after steps 121, 131, ..., 2991


def test_matches_ema_pytorch_with_other_settings():
    kw = {"update_every": 7, "update_after_step": 30, "inv_gamma": 2.0, "power": 0.75, "min_value": 0.3}
    cfg = {**EMA_DEFAULTS, "style": "ema_pytorch", "decay": 0.99, "every": 7, "update_after_step": 30,
           "inv_gamma": 2.0, "power": 0.75, "min_value": 0.3}
    ref = ReferenceEMA(online_weights(0), beta=0.99, **kw)
    for g, _, ema in run_suite(cfg, steps=800):
        ref.update(online_weights(g))
        assert ema == pytest.approx(ref.ema, abs=1e-6, rel=0), g


def test_official_decay_at_chosen_steps():
    def d(g):
        return ema_decay(g, OFFICIAL)

    assert [g for g in range(1, 200) if d(g) is not None] == list(range(1, 200, 10))  # after steps 1, 11, 21, ...
    assert all(d(g) == 0.0 for g in range(1, 112, 10))  # copies: 101 steps, then the `initted` copy at 111
    assert d(121) == pytest.approx(1 - 21 ** (-2 / 3))  # n = 20 steps past update_after_step
    assert d(1001) == pytest.approx(1 - 901 ** (-2 / 3))
    assert d(2921) < 0.995 and d(2931) == 0.995  # 1 - (1 + n)^(-2/3) >= 0.995 from n = 2828 on
    assert next(g for g in range(1, 10**4) if (d(g) or 0) >= 0.995) == 2931
    assert d(10**6 + 1) == 0.995 and d(10**6) is None


def test_timm_model_ema_v3_matches_ema_pytorch_from_0_6_4_when_gated_by_the_caller():
    """timm's ModelEmaV3 has no update_every and no `initted` copy: called on every 10th step with
    step = the incremented call counter (= Lightning's global_step) it follows ema_pytorch >= 0.6.4."""
    from timm.utils import ModelEmaV3

    net = nn.Linear(1, 1)
    set_linear(net, online_weights(0))
    timm_ema = ModelEmaV3(net, decay=0.995, update_after_step=100, use_warmup=True)
    late, early = (ReferenceEMA(online_weights(0), beta=0.995, early_init=e) for e in (False, True))
    for g in range(1, 400):
        set_linear(net, online_weights(g))
        late.update(online_weights(g))
        early.update(online_weights(g))
        if (g - 1) % 10 == 0:
            timm_ema.update(net, step=g)
        timm = [timm_ema.module.weight.item(), timm_ema.module.bias.item()]
        assert timm == pytest.approx(early.ema, abs=1e-6, rel=0), g
    assert late.ema != pytest.approx(early.ema, abs=1e-6, rel=0)  # differs by the copy at step 111


PLAIN_GRID = list(itertools.product([0.999, 0.9], [1, 3, 10], [0, 5, 37], [False, True]))


@pytest.mark.parametrize("decay,every,start,warmup", PLAIN_GRID)
def test_plain_style_is_the_former_behaviour(decay, every, start, warmup):
    def former(step):  # RestorationModule.on_train_batch_end + ema_decay before core.ema.ema_decay
        if step % every != 0:
            return None
        n = step - start
        if n <= 0:
            return 0.0
        return min(decay, (1 + n) / (10 + n)) if warmup else decay

    cfg = {**EMA_DEFAULTS, "decay": decay, "every": every, "start": start, "warmup": warmup}
    assert all(ema_decay(g, cfg) == former(g) for g in range(0, 600))


def test_defaults_keep_the_former_defaults():
    assert {k: EMA_DEFAULTS[k] for k in ("decay", "every", "start", "warmup")} == {
        "decay": 0.999, "every": 1, "start": 0, "warmup": False}
    assert EMA_DEFAULTS["style"] == "plain"
    assert ema_decay(1, dict(EMA_DEFAULTS)) == 0.999
    assert ema_decay(1, {"decay": 0.9}) == 0.9  # missing keys take the defaults


def test_disabled_and_invalid_configs():
    for off in (None, 0, 0.0):
        assert all(ema_decay(g, {**OFFICIAL, "decay": off}) is None for g in range(1, 50))
        assert ema_decay(1, {**EMA_DEFAULTS, "decay": off}) is None
    with pytest.raises(ValueError, match="unknown"):
        ema_decay(1, {**EMA_DEFAULTS, "beta": 0.995})
    with pytest.raises(ValueError, match="style"):
        ema_decay(1, {**EMA_DEFAULTS, "style": "timm"})
    with pytest.raises(ValueError, match="warmup"):
        ema_decay(1, {**OFFICIAL, "warmup": True})
    with pytest.raises(ValueError, match="update_after_step"):
        ema_decay(1, {**EMA_DEFAULTS, "update_after_step": 10})


def compose_model(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides)).model


def model_ema(*overrides):
    return {**EMA_DEFAULTS, **compose_model(*overrides).ema}


@pytest.mark.parametrize("experiment", ["irsde_rain100h", "irsde_gopro", "irsde_div2k_sr", "irsde_celebahq_inpaint",
                                        "irsde_denoise"])
def test_irsde_experiments_use_the_official_ema(experiment):
    cfg = model_ema(f"experiment={experiment}")
    assert cfg == OFFICIAL
    assert [ema_decay(g, cfg) for g in (1, 2, 111, 2931)] == [0.0, None, 0.0, 0.995]


def test_nafnet_model_and_demo_configs():
    nafnet = compose_model("experiment=irsde_rain100h", "model=irsde_nafnet")
    assert nafnet.net._target_.endswith("ConditionalNAFNet") and {**EMA_DEFAULTS, **nafnet.ema} == OFFICIAL
    for demo in ("irsde_demo", "irsde_demo_ckpt"):  # the shipped checkpoint's recipe: 0.999 + warm-up, every step
        cfg = model_ema(f"experiment={demo}")
        assert cfg == {**EMA_DEFAULTS, "decay": 0.999, "warmup": True}
        assert [ema_decay(g, cfg) for g in (1, 2, 100)] == [2 / 11, 3 / 12, 101 / 110]
    plain = model_ema("experiment=irsde_rain100h", "model.ema.style=plain")
    assert [ema_decay(g, plain) for g in (1, 10, 20)] == [None, 0.995, 0.995]  # the former IR-SDE default
