"""A network of your own (Arch.branch, or a head that is not a word) as K members computed at once.

Members holds one nn.Module from your factory as a template and the K members' weights stacked, each parameter and
buffer (K, ...) with member k at index k, as the built-in layers hold theirs (model/layers.py). A forward runs the
template on each member's weights with torch.func.functional_call:

- batched (where torch.func can): one call of vmap over the members, so K small networks run as one larger one
  (a convolution becomes a grouped one, a linear layer a batched matmul);
- one member after another, in a loop: where vmap cannot (data-dependent control flow, .item(), an operation vmap
  has no rule for), and on the CPU for a module with convolutions, whose own convolutions oneDNN runs faster than
  vmap's grouped one (docs/benchmarks.md). The engine then trains one round per group, its groups
  spread over threads (model.own_path, engine.group_rounds). There a module with convolutions gets its images in
  channels-last memory, as the built-in branch computes, where the probe finds it runs so and draws nothing from
  torch's generator: oneDNN's convolutions and the engine's pooling kernel then keep that layout, and the pooling
  runs vectorised over the channels (docs/benchmarks.md). The same function: the numbers differ from NCHW's by
  rounding.

Randomness: every nn.Dropout in your module is replaced by one whose keep masks come from each member's own
generator (PairNet.rngs), drawn before the step like the built-in dropout's, so that member k's numbers are those of
a separate run. Any other random operation (F.dropout, torch.randn in a training forward) draws from torch's global
generator, seeded before each training forward from the members' generators, under a lock (threads share that
generator): one member after another, each from its own; batched, the group from its first member's, and vmap gives
each member different draws (randomness="different"), which then depend on the group a round trains in. An
evaluation must draw nothing (the probe refuses one that does).

BatchNorm: its running statistics are buffers, stacked per member like the weights; under vmap each member's
forward updates its own slice of them in place, so they stay per member exactly as in separate runs. The probe
(probe()) checks a factory once per process: it builds the module, runs it on a few images, reads the output's
shape, the largest activation and the forward FLOPs, and tries the batched path.
"""

import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch.utils.flop_counter import FlopCounterMode

from digitpairs.base.errors import UserError, first_line
from digitpairs.device import upload
from digitpairs.model.swaps import VMAP, MaskedDropout, mask_dropouts
from digitpairs.spec import plugins

RNG_LOCK = threading.RLock()  # torch's global generator: factories initialise from it, random forwards draw from it
PROBE_ROWS = 3  # images in the probe's forward


@dataclass
class MemberDropout:
    """One of your module's dropouts, for the engine: draw() makes its masks from the members' generators, and
    `mask` holds them for the next training forward (as model.layers.KDropout)."""
    path: str  # the MaskedDropout's name in the template
    p: float
    shape: tuple[int, ...]  # of one image's input to it
    rngs: list
    mask: torch.Tensor | None = None  # (K, rows, *shape) on the device, or None: drawn in the forward

    def draw(self, rows: int) -> torch.Tensor:
        return torch.stack([torch.empty(rows, *self.shape).bernoulli_(1 - self.p, generator=g) for g in self.rngs])


@dataclass(frozen=True)
class Probe:
    """What the probe learnt about a factory at one input shape."""
    mode: str  # "batched" (vmap, per-member randomness), "batched-random" (vmap, global randomness), "plain"
    why: str  # why it is not fully batched ("" where it is)
    dropouts: tuple[tuple[str, float, tuple[int, ...]], ...]  # (path, p, per-image input shape) of its masked ones
    random: bool  # whether a training forward draws from the global generator
    eval_batched: bool  # whether an evaluation forward runs under vmap (else one member after another)
    convs: bool  # whether it has convolutions: on the CPU it then runs one member after another (Members.looped)
    channels_last: bool  # whether it gets its images in channels-last memory one member after another on the CPU:
    #                      it has convolutions, draws nothing from torch's generator, and runs so (no .view of a map
    #                      that needs NCHW's strides, in training or evaluation)
    act_bytes: int  # its largest activation per image, in fp32
    flops: int  # forward FLOPs per image (2 per multiply-add)


def build(factory, args: tuple, arch: str, role: str, in_shape: tuple) -> nn.Module:
    """factory(*args) as a module, its lazy layers (nn.LazyLinear, ...) materialised by a forward on zeros
    (N, *in_shape); or one line naming the architecture."""
    try:
        with RNG_LOCK:  # its initialisation draws from torch's generator, which another thread may have seeded
            module = factory(*args)
            if isinstance(module, nn.Module) and any(
                    isinstance(t, UninitializedParameter | UninitializedBuffer)
                    for t in [*module.parameters(), *module.buffers()]):
                with torch.no_grad():
                    module.eval()(torch.zeros(PROBE_ROWS, *in_shape))
                module.train()
    except Exception as e:  # noqa: BLE001 - the user's code: one line
        raise UserError(f"architecture {arch}: its {role} factory failed ({type(e).__name__}: {first_line(e)}): "
                        "fix it") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"architecture {arch}: its {role} factory returned {type(module).__name__}, not an "
                        "nn.Module: return the network")
    return module


_PROBES: dict = {}  # (reference, args, input shape) -> Probe, once per process


def probe(factory, args: tuple, in_shape: tuple, out_shape: tuple, arch: str, role: str) -> Probe:
    """Check a factory's module on inputs (N, *in_shape): its output must be (N, *out_shape) (a head's (N,) too)."""
    key = (plugins.reference(factory), args, in_shape)
    if key not in _PROBES:
        _PROBES[key] = _probe(factory, args, in_shape, out_shape, arch, role)
    return _PROBES[key]


def _probe(factory, args, in_shape, out_shape, arch, role) -> Probe:
    with RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = mask_dropouts(build(factory, args, arch, role, in_shape)).train()
        seen, acts = {}, [0]

        def pre(m, inputs):
            seen.setdefault(m, []).append(tuple(inputs[0].shape))

        def post(m, inputs, output):
            if isinstance(output, torch.Tensor):
                acts[0] = max(acts[0], output.numel() // PROBE_ROWS)

        hooks = [m.register_forward_pre_hook(pre) for m in module.modules() if isinstance(m, MaskedDropout)]
        hooks += [m.register_forward_hook(post) for m in module.modules()]
        x = torch.rand(PROBE_ROWS, *in_shape)
        try:
            with FlopCounterMode(display=False) as counter:
                y = module(x)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"architecture {arch}: its {role} fails on inputs of shape {(PROBE_ROWS, *in_shape)} "
                            f"({type(e).__name__}: {first_line(e)}): fix it") from None
        finally:
            for h in hooks:
                h.remove()
    shapes = [(PROBE_ROWS, *out_shape)] + ([(PROBE_ROWS,)] if role == "head" else [])
    if not isinstance(y, torch.Tensor) or tuple(y.shape) not in shapes:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserError(f"architecture {arch}: its {role} maps {(PROBE_ROWS, *in_shape)} to {got}, not "
                        f"{shapes[0]}: fix its output")
    paths = {m: p for p, m in module.named_modules()}
    dropouts = tuple((paths[m], m.p, s[0][1:]) for m, s in seen.items() if len(s) == 1 and s[0][0] == PROBE_ROWS)
    # a dropout called twice, or on rows that are not the images, stays torch's (its draws are global)
    paths = _paths(factory, args, in_shape, {p for p, _, _ in dropouts}, arch, role)
    convs = any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
    # channels-last where its draws cannot land elsewhere: torch's generator fills a random map in memory order
    cl = convs and not paths["random"] and len(in_shape) == 3 and runs_channels_last(module, x)
    return Probe(**paths, convs=convs, channels_last=cl, dropouts=dropouts, act_bytes=4 * acts[0],
                 flops=counter.get_total_flops() // PROBE_ROWS)


def runs_channels_last(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether the module (the probe's own) runs on the images x (N, C, H, W) in channels-last memory: a training
    forward and its backward, then an evaluation forward."""
    try:
        with RNG_LOCK, torch.random.fork_rng(devices=[]):
            module.train()(to_channels_last(x)).float().sum().backward()
            with torch.no_grad():
                module.eval()(to_channels_last(x))
        return True
    except Exception:  # noqa: BLE001 - a .view that needs NCHW's strides, among others: it gets NCHW
        return False


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in channels-last memory, also where C is 1 (there the same bytes, with the strides that
    make a convolution compute and answer in channels-last memory)."""
    _, c, h, w = x.shape
    x = x.contiguous(memory_format=torch.channels_last)
    return x.as_strided(x.shape, (h * w * c, 1, w * c, c)) if c == 1 else x


def _paths(factory, args, in_shape, masked: set[str], arch, role) -> dict:
    """How two stacked members run. Training: "batched" where a forward and backward runs under vmap with the
    members' own randomness only, "batched-random" where it does with torch's generator, else "plain" (and why not
    batched); whether a plain training forward draws from torch's generator; whether evaluation runs under vmap."""
    with RNG_LOCK, torch.random.fork_rng(devices=[]):
        members = Members(mask_dropouts(build(factory, args, arch, role, in_shape), masked), 2, [])
        x = torch.rand(2, PROBE_ROWS, *in_shape)
        mode, why = "plain", ""
        for name, randomness in (("batched", "error"), ("batched-random", "different")):
            try:
                members.train().batched(x, randomness, {}).float().sum().backward()
                mode = name
                break
            except Exception as e:  # noqa: BLE001 - what vmap cannot take: the next mode
                why = why or f"{type(e).__name__}: {first_line(e).split('. ')[0]}"
        random = mode == "batched-random" or mode == "plain" and draws(members, x[0], True) is not False
        moved = draws(members, x[0], False)
        if moved is None:
            raise UserError(f"architecture {arch}: its {role} fails in evaluation (eval mode): fix it")
        if moved:
            raise UserError(f"architecture {arch}: its {role} draws random numbers in evaluation (eval mode), which "
                            "must be deterministic: draw only when self.training")
        try:
            with torch.no_grad():
                members.eval().batched(x, "error", {})
            eval_batched = True
        except Exception:  # noqa: BLE001 - evaluated one member after another
            eval_batched = False
    return {"mode": mode, "why": why if mode != "batched" else "", "random": random, "eval_batched": eval_batched}


def draws(members: "Members", x, training: bool) -> bool | None:
    """Whether a forward of one member, in training or in evaluation, draws from torch's generator (its state
    moves); None where it fails outside vmap."""
    weights = {name: t[0] for name, t in members.weights().items()}
    members.train(training)
    members._template[0].train(training)
    before = torch.get_rng_state()
    try:
        with torch.no_grad():
            members.call(weights, {}, x)
    except Exception:  # noqa: BLE001 - said by the caller
        return None
    return not torch.equal(before, torch.get_rng_state())


class Members(nn.Module):
    """K members of one module of yours: inputs (K, N, *in) -> outputs (K, N, *out) (a head's (K, N)).

    template: the module, its dropouts masked (mask_dropouts); info: its probe, None while probing; make: builds
    another like it (fresh())."""

    def __init__(self, template: nn.Module, k: int, rngs: list, info: Probe | None = None, role: str = "branch",
                 make: tuple = ()):
        super().__init__()
        self.k, self.rngs, self.info, self.role, self.make = k, rngs, info, role, make
        self.channels_last = True  # images in channels-last memory where the probe allows (train() sets it)
        self._template = [template]  # not a submodule: the weights it computes with are this module's stacked ones
        self.names = {}  # the template's name of each weight -> this module's
        for name, t in self.weights_of(template):
            self.names[name] = name.replace(".", "__")
            stacked = t.detach().unsqueeze(0).repeat(k, *[1] * t.dim()).clone()
            if isinstance(t, nn.Parameter):
                self.register_parameter(self.names[name], nn.Parameter(stacked, requires_grad=t.requires_grad))
            else:
                self.register_buffer(self.names[name], stacked)
        self.dropouts = [MemberDropout(path, p, shape, rngs) for path, p, shape in (info.dropouts if info else ())]

    @staticmethod
    def weights_of(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
        """Its parameters and buffers, but the masks of its MaskedDropouts."""
        masked = {path for path, m in module.named_modules() if isinstance(m, MaskedDropout)}
        return [*module.named_parameters(), *((n, b) for n, b in module.named_buffers()
                                              if n.rpartition(".")[0] not in masked or not n.endswith("mask"))]

    def fresh(self) -> nn.Module:
        """A new module from the factory, as the template was built (its initial weights from torch's generator)."""
        return fresh(*self.make)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._template[0]._apply(fn, recurse)  # tensors it holds outside its weights follow them to the device
        return self

    def set_member(self, i: int, module: nn.Module) -> None:
        """Member i's weights from a module built by the factory (PairNet.seed)."""
        with torch.no_grad():
            for name, t in self.weights_of(module):
                getattr(self, self.names[name])[i].copy_(t)

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, flat) for name, flat in self.names.items()}

    def masks(self, rows: int, device) -> dict[str, torch.Tensor]:
        """The masks of a training forward on `rows` images per member: given (the step's draws) or drawn now."""
        if not self.training:
            return {}
        return {f"{d.path}.mask": d.mask if d.mask is not None else upload(d.draw(rows), device)
                for d in self.dropouts if d.p > 0}

    def call(self, weights: dict, masks: dict, x):
        """The template on one member's weights (or, under vmap, on each member's)."""
        return functional_call(self._template[0], weights | masks, (x,))

    def batched(self, x, randomness: str, masks: dict):
        self._template[0].train(self.training)
        VMAP.on = True
        try:
            return vmap(self.call, randomness=randomness)(self.weights(), masks, x)
        finally:
            VMAP.on = False

    def looped(self, device: torch.device) -> bool:
        """Whether its members run one after another here: where vmap cannot take it, and on the CPU where it has
        convolutions (vmap makes each a grouped convolution, which oneDNN runs slower than the members' own
        convolutions: docs/benchmarks.md)."""
        return self.info.mode == "plain" or (device.type == "cpu" and self.info.convs)

    def plain(self, x, masks: dict, random: bool):
        """One member after another."""
        self._template[0].train(self.training)
        weights, ys = self.weights(), []
        cl = self.channels_last and x.device.type == "cpu" and self.info.channels_last
        for i in range(x.shape[0]):
            one = ({name: t[i] for name, t in weights.items()}, {key: m[i] for key, m in masks.items()},
                   to_channels_last(x[i]) if cl else x[i])
            if random:
                with RNG_LOCK:
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.rngs[i])))
                    ys.append(self.call(*one))
            else:
                ys.append(self.call(*one))
        return torch.stack(ys)

    def forward(self, x):
        k, n = x.shape[:2]
        masks = self.masks(n, x.device)
        random = self.training and self.info.random
        if self.looped(x.device):
            y = self.plain(x, masks, random)
        elif not self.training:
            y = self.batched(x, "error", masks) if self.info.eval_batched else self.plain(x, masks, False)
        elif not random:
            y = self.batched(x, "error", masks)
        else:
            with RNG_LOCK:  # one seed for the group, from its first member's generator
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.rngs[0])))
                y = self.batched(x, "different", masks)
        return y.reshape(k, n) if self.role == "head" else y


def create(factory, args: tuple, k: int, rngs: list, arch: str, role: str, in_shape: tuple,
           out_shape: tuple) -> Members:
    """K members of factory(*args), after its probe (the same initial weights in each: PairNet.seed sets them)."""
    info = probe(factory, args, in_shape, out_shape, arch, role)
    make = (factory, args, info, arch, role, in_shape)
    return Members(fresh(*make), k, rngs, info, role, make)


def fresh(factory, args: tuple, info: Probe, arch: str, role: str, in_shape: tuple) -> nn.Module:
    """A new module from the factory, its dropouts masked where the probe found they can be."""
    return mask_dropouts(build(factory, args, arch, role, in_shape), {p for p, _, _ in info.dropouts})
