"""The registry of named architectures: the report's Table 1 and the one beyond it, and yours (register_arch).
`digitpairs list`, the study files and the tests iterate over it. No torch: an Arch is data; model.create_model
builds its network.
"""

import dataclasses

from digitpairs.base.errors import UserError
from digitpairs.spec import plugins
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.names import check_name

ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    """Add a named architecture to the registry (`digitpairs list`, studies and the tests pick it up); one
    registered while a plugin loads remembers that plugin."""
    check_name(arch.name, "architecture name")
    if arch.name in ARCHS:
        where = ARCHS[arch.name].plugin
        raise UserError(f"architecture {arch.name!r} is already registered"
                        + (f" (by {where})" if where else " (a built-in one)") + ": give yours another name")
    if plugins.CURRENT and arch.plugin is None:
        arch = dataclasses.replace(arch, plugin=plugins.CURRENT[-1])
    arch = arch.validate()
    if arch.own:  # hashed here, where its files are: a Ray task that gets its code by value has none
        arch = dataclasses.replace(arch, code=tuple(own_hashes(arch)))
    ARCHS[arch.name] = arch
    return arch


def register_arch(fn):
    """Decorator: register the Arch that fn returns, named after fn unless it names itself.

        @register_arch
        def siamese_wide():
            return Arch("siamese_wide", "Siamese WS,AUX wide", objective="comparison+digits", extra={"hidden": 256})
    """
    arch = fn()
    register(arch if arch.name else dataclasses.replace(arch, name=fn.__name__))
    return fn


# Table 1 of the report, with its figures (test accuracy, SD, #params)
register(Arch("transfer", "TransferLearn", objective="digits", head="logic", report=(0.9686, 0.0067, 72418)))
register(Arch("siamese_nows", "Siamese NoWS", share=False, report=(0.8074, 0.0089, 145737)))
register(Arch("siamese_ws", "Siamese WS", report=(0.7790, 0.0152, 73299)))
AUX = "comparison+digits"  # the report's auxiliary loss: L_cmp + alpha * L_digits
register(Arch("siamese_ws_aux", "Siamese WS,AUX", objective=AUX, report=(0.8373, 0.0220, 73299)))
register(Arch("siamese_ws_aux_bn", "Siamese WS,AUX,BN", objective=AUX, bn=True, report=(0.8476, 0.0142, 73299)))
register(Arch("siamese_ws_aux_bn_drop", "Siamese WS,AUX,BN,DROP", objective=AUX, bn=True, dropout=True,
              report=(0.8474, 0.0115, 73299)))

# Beyond the report (docs/accuracy.md): the weight-shared digit branch with BatchNorm, trained on the digits of
# both images with augmentation, OneCycle and twice the epochs; the comparison is P(a <= b) > 1/2 under the two
# digit distributions, averaged over 5 test-time views. Every choice was made on a validation split.
register(Arch("ws_bn_aug_bayes", "WS,BN,AUG,Bayes", objective="digits", bn=True, head="prob", extra={
    "shift": 0.1, "rotate": 10.0, "scale": 0.1, "elastic": 0.03,  # augmentation that keeps a digit's identity
    "schedule": "onecycle", "lr": 3e-3, "epochs": 50,  # twice the protocol's 25 epochs, OneCycle up to 3e-3
    "tta": 5,  # the image and its four one-pixel shifts
    "pad": {14: True, 28: False},  # at 14x14, padded convolutions keep 3x3 features (4x4 at 28 unpadded)
}))


def get_arch(name: str) -> Arch:
    """A registered architecture; the installed plugins are loaded first where the name is not known yet."""
    if name not in ARCHS:
        plugins.load_installed()
    if name not in ARCHS:
        raise UserError(f"unknown architecture {name!r}: choose from {', '.join(ARCHS)} (see `digitpairs list`)")
    return ARCHS[name]


def own_hashes(arch: Arch) -> list[str | None]:
    """The SHA-256 of the source file of each of an architecture's networks of yours (spec.plugins.code_hash);
    None where this process has no file of it."""
    return [plugins.code_hash(arch.factory(part)) for part in arch.own_parts]


def own_settings(arch: Arch, size: int) -> dict:
    """The Config fields an architecture sets for itself (Arch.extra) at this image size: a value given as
    {14: v14, 28: v28} depends on the size."""
    for k, v in arch.extra.items():
        if isinstance(v, dict) and size not in v:
            raise UserError(f"{arch.name} sets {k} for image sizes {', '.join(map(str, v))} only, not {size}: "
                            "use one of these sizes")
    return {k: v[size] if isinstance(v, dict) else v for k, v in arch.extra.items()}


def arch_config(arch: Arch, cfg: Config) -> Config:
    """cfg with the architecture's own settings applied (idempotent)."""
    return cfg.replace(**own_settings(arch, cfg.size)) if arch.extra else cfg
