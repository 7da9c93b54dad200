"""Starting a DiffIR stage from an earlier stage's checkpoint (suite or official file, EMA weights preferred):
stage 2 from ``model.stage1_ckpt`` (official ``pretrain_network_g`` / ``pretrain_network_S1``), S2-GAN from
``model.stage2_ckpt``. A file of the other stage, another architecture (``ConfigError`` naming the ``model.net``
setting) or, for suite checkpoints, other data (the keys of ``model.stage<k>_match``) is refused. The modules
call these in ``setup`` when a fresh run starts; a resumed run finds every weight in its own checkpoint.
"""

from __future__ import annotations

import logging

from core.checkpoint import load_checkpoint
from core.errors import CheckpointError, ConfigError
from diffir.official import S1_SIGNATURE, _complete_aliases, infer_config, load_state_dict_any

log = logging.getLogger(__name__)

# Architecture settings stage 2 must share with stage 1 (its DIRformer and teacher CPEN come from there).
SHARED_SETTINGS = ("inp_channels", "out_channels", "dim", "num_blocks", "num_refinement_blocks", "heads",
                   "bias", "LayerNorm_type", "scale", "n_encoder_res")
# ... and those the S2-GAN stage must share with stage 2 (its IPR diffusion).
STAGE2_SETTINGS = (*SHARED_SETTINGS, "n_denoise_res", "timesteps", "linear_start", "linear_end")


def load_stage1(module, path, data_cfg: dict | None = None) -> None:
    """``module.net``'s DIRformer and ``module.teacher`` <- the stage-1 network in ``path``, then a fresh EMA;
    ``data_cfg``: this run's data config, checked against the stored one on ``module.stage1_match``."""
    try:
        state = load_state_dict_any(path)
    except CheckpointError as err:
        raise CheckpointError(f"model.stage1_ckpt: {err}") from err
    if S1_SIGNATURE not in state:
        raise CheckpointError(f"model.stage1_ckpt={path} holds a DiffIR stage-2 network; stage 2 starts from "
                              "the checkpoint of a stage-1 run (experiment=diffir_s1_...)")
    _check_settings(path, infer_config(state), module.net.config, 1, "stage 2 must use the stage-1 architecture")
    for key, value in module.net.G.state_dict().items():
        other = state.get(f"G.{key}")
        if other is None or other.shape != value.shape:
            setting = "model.net.ffn_expansion_factor" if ".ffn." in key else "model.net"
            theirs = None if other is None else tuple(other.shape)
            raise ConfigError(f"model.stage1_ckpt={path}: its DIRformer does not fit this run's {setting} "
                              f"(G.{key}: {theirs} vs {tuple(value.shape)})")
    check_data(path, load_checkpoint(path), data_cfg, module.stage1_match, stage=1)
    module.net.G.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("G.")})
    module.teacher.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("E.")})
    module.setup_ema()
    log.info("DiffIR stage 2: DIRformer and teacher CPEN loaded from %s", path)


def load_stage2(module, path, data_cfg: dict | None = None, stage1_path=None) -> None:
    """``module.net`` <- the stage-2 network in ``path``; ``module.teacher`` <- ``stage1_path``'s CPEN_S1 if
    given, else the suite checkpoint's teacher; then a fresh EMA. ``data_cfg`` as :func:`load_stage1`."""
    try:
        state = load_state_dict_any(path)
    except CheckpointError as err:
        raise CheckpointError(f"model.stage2_ckpt: {err}") from err
    if S1_SIGNATURE in state:
        raise CheckpointError(f"model.stage2_ckpt={path} holds a DiffIR stage-1 network; the S2-GAN stage starts "
                              "from the checkpoint of a stage-2 run (experiment=diffir_s2_..., trained with "
                              "model.stage1_ckpt=<this file>)")
    _check_settings(path, infer_config(state), module.net.config, 2,
                    "the S2-GAN stage fine-tunes the stage-2 network as it is")
    raw = load_checkpoint(path)
    check_data(path, raw, data_cfg, module.stage2_match, stage=2)
    teacher = None
    if stage1_path:
        load_stage1(module, stage1_path, data_cfg)  # checks the stage-1 file; its DIRformer is replaced below
    else:
        suite_state = raw.get("state_dict") if isinstance(raw, dict) else None
        if isinstance(suite_state, dict):
            teacher = {k[len("teacher."):]: v for k, v in suite_state.items() if k.startswith("teacher.")}
        if not teacher:
            raise CheckpointError(f"model.stage2_ckpt={path} holds no stage-1 teacher CPEN (an official or plain "
                                  "stage-2 file): also pass model.stage1_ckpt=<the stage-1 checkpoint it was "
                                  "trained from> (the official pretrain_network_S1)")
    state = _complete_aliases(state, module.net)
    for key, value in module.net.state_dict().items():
        other = state.get(key)
        if other is None or other.shape != value.shape:
            theirs = None if other is None else tuple(other.shape)
            raise ConfigError(f"model.stage2_ckpt={path}: its weights do not fit this run's model.net ({key}: "
                              f"{theirs} vs {tuple(value.shape)}); use the model.net settings of the stage-2 run")
    module.net.load_state_dict({k: state[k] for k in module.net.state_dict()}, strict=True)
    if teacher is not None:
        try:
            module.teacher.load_state_dict(teacher, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"model.stage2_ckpt={path}: its teacher CPEN does not fit this run's "
                                  f"model.net ({str(err)[:300]})") from err
    module.setup_ema()
    log.info("DiffIR S2-GAN: generator%s loaded from %s", "" if teacher is None else " and teacher", path)


def _check_settings(path, found: dict, mine: dict, stage: int, why: str) -> None:
    """The architecture read off the stage-``stage`` file must equal this run's ``model.net``."""
    for key in STAGE2_SETTINGS if stage == 2 else SHARED_SETTINGS:
        theirs, ours = _comparable(key, found.get(key)), _comparable(key, mine.get(key))
        if key in found and theirs != ours:
            raise ConfigError(f"model.stage{stage}_ckpt={path} has {key}={theirs} but this run has model.net.{key}="
                              f"{ours}: {why} (set model.net.{key}={theirs}, or start from the stage-{stage} run "
                              "of this configuration)")


def check_data(path, stored, ours: dict | None, keys, stage: int) -> None:
    """The data settings ``keys`` (model.stage<k>_match) must equal those stored in the checkpoint ``stored``
    (a loaded suite checkpoint; official files store none, and no ``ours`` means nothing to compare)."""
    theirs = stored.get("config") if isinstance(stored, dict) else None
    theirs = theirs.get("data") if isinstance(theirs, dict) else None
    if ours is None or not isinstance(theirs, dict):
        return
    for key in keys:
        a, b = theirs.get(key), ours.get(key)
        if a != b:
            raise ConfigError(f"model.stage{stage}_ckpt={path} was trained with data.{key}={a!r} but this run has "
                              f"data.{key}={b!r}: start from the stage-{stage} run of the same data (or set "
                              f"model.stage{stage}_match=[] to allow it)")


def _comparable(key: str, value):
    if key == "scale":
        return int(value or 1)
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value  # linear_start / _end, read off float32 betas
