"""PairNet and the registry of named architectures.

A PairNet holds K independent members (K = 1 for a single run; K rounds trained at once otherwise). Every layer
keeps a separate set of weights per member: convolutions are grouped convolutions with one group per member,
linear layers are batched matmuls, BatchNorm keeps statistics per member and channel, dropout draws each member's
masks from that member's own generator. Member k is therefore the same network, with the same initialisation
and the same random stream, whatever K is.

Output contract, for every architecture: forward(x) with x (K, B, 2, S, S) returns
  cmp    (K, B)        comparison logit, > 0 means "first digit <= second"
  digits (K, B, 2, 10) digit logits of the two images
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs import UserError
from digitpairs.bnrelu import batch_norm_relu
from digitpairs.config import Arch, Config
from digitpairs.device import upload
from digitpairs.ops import conv_pool2x2, max_pool2x2
from digitpairs.unfold import conv2d_unfold


class KConv2d(nn.Module):
    """K independent convolutions as one grouped convolution, each followed by a 2x2 max-pool if `pool`:
    (N, K*cin, H, W) -> (N, K*cout, H', W'), H' halved (floored) by the pool. On the CPU, a convolution from one
    channel per member runs fused with its pool (ops.py: the same function, summed in another order); with `unfold`
    set (the run option matmul_conv), it is one batched matmul over unfolded patches (unfold.py)."""

    def __init__(self, k: int, cin: int, cout: int, ks: int, bias: bool = True, padding: int = 0,
                 pool: bool = False):
        super().__init__()
        self.k, self.fan_in, self.padding, self.pool = k, cin * ks * ks, padding, pool
        self.weight = nn.Parameter(torch.empty(k * cout, cin, ks, ks))
        self.bias = nn.Parameter(torch.empty(k * cout)) if bias else None
        self.unfold = False

    def forward(self, x, channels_last: bool = True):
        """channels_last: the memory format of PyTorch's convolution (speed only; on CPU much faster)."""
        if self.unfold:
            y = conv2d_unfold(x, self.weight, self.bias, self.padding, self.k)
            return max_pool2x2(y) if self.pool else y
        if self.pool:
            return conv_pool2x2(x, self.weight, self.bias, self.padding, self.k, channels_last)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.k)


class KLinear(nn.Module):
    """K independent linear layers as one batched matmul: (K, N, fin) -> (K, N, fout)."""

    def __init__(self, k: int, fin: int, fout: int, bias: bool = True):
        super().__init__()
        self.k, self.fan_in = k, fin
        self.weight = nn.Parameter(torch.empty(k, fin, fout))
        self.bias = nn.Parameter(torch.empty(k, 1, fout)) if bias else None

    def forward(self, x):
        return torch.bmm(x, self.weight) if self.bias is None else torch.baddbmm(self.bias, x, self.weight)


class KBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (K, N, F) with statistics per member and feature: the K*F features are just more features."""

    def __init__(self, k: int, features: int):
        super().__init__(k * features)

    def forward(self, x):
        k, n, f = x.shape
        return super().forward(x.transpose(0, 1).reshape(n, k * f)).view(n, k, f).transpose(0, 1)


class KDropout(nn.Module):
    """Dropout over (K, N, F) whose masks come from each member's own generator (PairNet.rngs): drawn here, or
    beforehand (draw()) and set as `mask` for the next forward (the training step does, steps.py)."""

    def __init__(self, p: float, rngs: list, features: int):
        super().__init__()
        self.p, self.rngs, self.features = p, rngs, features
        self.mask: torch.Tensor | None = None  # (K, N, F) 0/1 keep mask on the input's device, or None: draw it

    def draw(self, rows: int) -> torch.Tensor:
        """(K, rows, F) keep mask, on the CPU from the members' streams: the same masks on every device."""
        return torch.stack([torch.empty(rows, self.features).bernoulli_(1 - self.p, generator=g) for g in self.rngs])

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = self.mask if self.mask is not None else upload(self.draw(x.shape[1]), x.device)
        return x * keep.to(x.dtype) / (1 - self.p)


def kernel_size(cfg: Config) -> int:
    return 5 if cfg.size == 28 else 3  # the receptive field follows the image size


def first_map_bytes(cfg: Config) -> int:
    """Bytes of one member's largest activation in a training step, the first convolution's output (on the CPU the
    fused kernel of ops.py never writes it whole, so a cache budget based on it is generous there)."""
    side = cfg.size if cfg.pad else cfg.size - kernel_size(cfg) + 1
    return cfg.batch_size * 2 * cfg.channels[0] * side * side * (2 if cfg.precision == "bf16" else 4)


class Branch(nn.Module):
    """The digit branch, 2 conv + 2 fc layers, K members: images (N, K, S, S) -> digit logits (K, N, 10)."""

    def __init__(self, k: int, cfg: Config, bn: bool, dropout: bool, rngs: list):
        super().__init__()
        ks = kernel_size(cfg)
        c1, c2 = cfg.channels
        shrink = 0 if cfg.pad else ks - 1  # what a convolution takes off the side
        side = ((cfg.size - shrink) // 2 - shrink) // 2  # after conv, pool, conv, pool: 4 at 28, 2 at 14 (unpadded)
        self.k, self.size = k, cfg.size
        self.channels_last = True  # memory format of the convolutions: speed only (train() sets it)
        # a bias right before BatchNorm is redundant (BN subtracts it again): its gradient is zero but for float
        # noise, which Adam would amplify into steps of size lr
        pad = ks // 2 if cfg.pad else 0
        self.conv1 = KConv2d(k, 1, c1, ks, not bn, pad, pool=True)
        self.conv2 = KConv2d(k, c1, c2, ks, not bn, pad, pool=True)
        self.bn1 = nn.BatchNorm2d(k * c1) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(k * c2) if bn else nn.Identity()
        self.fc1 = KLinear(k, c2 * side * side, cfg.hidden, bias=not bn)
        self.bn3 = KBatchNorm1d(k, cfg.hidden) if bn else nn.Identity()
        self.drop = KDropout(cfg.dropout_p, rngs, cfg.hidden) if dropout else nn.Identity()
        self.fc2 = KLinear(k, cfg.hidden, 10)

    def forward(self, x):
        n = x.shape[0]
        # pool before BN and ReLU: ReLU commutes with max-pooling, and the elementwise work is 4x smaller
        x = batch_norm_relu(self.conv1(x, self.channels_last), self.bn1)  # conv and pool: (N, K*c1, ., .)
        x = batch_norm_relu(self.conv2(x, self.channels_last), self.bn2)  # (N, K*c2, side, side)
        x = x.reshape(n, self.k, -1).transpose(0, 1)  # (K, N, c2*side*side)
        x = self.drop(F.relu(self.bn3(self.fc1(x))))  # (K, N, hidden)
        return self.fc2(x)  # (K, N, 10)


class PairNet(nn.Module):
    """Siamese pair classifier: digit branch(es), then a comparison of the two digit predictions."""

    def __init__(self, arch: Arch, cfg: Config, k: int = 1):
        super().__init__()
        self.arch, self.k, self.members = arch, k, cfg.members
        self.rngs: list[torch.Generator] = [torch.Generator() for _ in range(k)]  # per-member random stream
        n_branches = 1 if arch.share else 2  # weight sharing: one branch called twice; none: two instances
        self.branches = nn.ModuleList(Branch(k, cfg, arch.bn, arch.dropout, self.rngs) for _ in range(n_branches))
        if arch.head == "mlp":  # 3 linear layers on the 20 digit probabilities
            h = cfg.head_hidden
            self.head = nn.ModuleList([KLinear(k, 20, h), KLinear(k, h, h), KLinear(k, h, 1)])
        else:  # "logic" and "prob": no parameters; the comparison follows from the two digit predictions
            self.head = nn.ModuleList()
            self.register_buffer("le", torch.ones(10, 10).triu(), persistent=False)  # le[i, j] = 1 if i <= j

    def dropouts(self) -> list[KDropout]:
        """The dropout layers that draw, in the order a forward calls them."""
        return [b.drop for b in self.branches if isinstance(b.drop, KDropout) and b.drop.p > 0]

    def draw_masks(self, b: int) -> list[torch.Tensor]:
        """The keep masks of a training forward on b pairs, drawn in the order the forward would draw them: a shared
        branch sees both images of every pair (2b rows), each unshared branch one image (b rows)."""
        return [d.draw(2 * b // len(self.branches)) for d in self.dropouts()]

    def num_params(self) -> int:
        """Parameters of one round's model, i.e. of its `members` ensemble members (BatchNorm's affine parameters
        included, running statistics not)."""
        return sum(p.numel() for p in self.parameters()) // self.k * self.members

    def flops_per_pair(self) -> int:
        """Analytic forward FLOPs of one member on one pair (2 per multiply-add of the convs and linear layers)."""
        total = 0

        def count(module, inputs, output):
            nonlocal total
            if isinstance(module, KConv2d):  # input (N, K*cin, H, H); weight (K*cout, cin, k, k); square maps
                kc, _, ks, _ = module.weight.shape
                side = inputs[0].shape[-1] + 2 * module.padding - ks + 1  # the convolution's, before any pool
                total += 2 * inputs[0].shape[0] * kc * side * side * module.weight[0].numel()
            else:  # KLinear: output (K, N, fout); weight (K, fin, fout)
                total += 2 * module.weight.numel() * output.shape[1]

        hooks = [m.register_forward_hook(count) for m in self.modules() if isinstance(m, KConv2d | KLinear)]
        try:
            size = self.branches[0].size
            with torch.no_grad():
                self.eval()
                self(torch.zeros(self.k, 1, 2, size, size))
        finally:
            for h in hooks:
                h.remove()
        return total // self.k

    def seed(self, init_seeds: list[int], stream_seeds: list[int]) -> "PairNet":
        """Initialise member k from init_seeds[k] (PyTorch's default uniform bounds) and reset its random stream."""
        for k, (s_init, s_stream) in enumerate(zip(init_seeds, stream_seeds, strict=True)):
            g = torch.Generator().manual_seed(s_init)
            for m in self.modules():
                if isinstance(m, KConv2d | KLinear):
                    bound = 1 / math.sqrt(m.fan_in)
                    for p in (m.weight, m.bias) if m.bias is not None else (m.weight,):
                        member = p.data.view(m.k, -1)[k]
                        member.copy_(torch.empty(member.shape).uniform_(-bound, bound, generator=g))
            self.rngs[k].manual_seed(s_stream)
        return self

    def forward(self, x):
        k, b, _, s, _ = x.shape
        if len(self.branches) == 1:  # both images through the same branch: (2B, K, S, S)
            digits = self.branches[0](x.permute(1, 2, 0, 3, 4).reshape(b * 2, k, s, s)).view(k, b, 2, 10)
        else:
            digits = torch.stack([br(x[:, :, i].transpose(0, 1)) for i, br in enumerate(self.branches)], dim=2)
        digits = digits.float()  # probabilities and the comparison in fp32, also under bf16 autocast
        probs = digits.softmax(-1)  # (K, B, 2, 10)
        if self.arch.head == "mlp":
            h = probs.reshape(k, b, 20)
            for i, layer in enumerate(self.head):
                h = layer(h) if i == len(self.head) - 1 else F.relu(layer(h))
            return h.squeeze(-1), digits
        p_le = self.p_le(probs).clamp(1e-6, 1 - 1e-6)
        return torch.log(p_le) - torch.log1p(-p_le), digits  # the soft logic as a logit, for L_cmp

    def p_le(self, probs):
        """(K, B, 2, 10) digit probabilities -> (K, B) P(first digit <= second), the two digits independent."""
        with torch.autocast(probs.device.type, enabled=False):  # in fp32: 1 - 1e-6 is 1 in bfloat16
            return torch.einsum("kbi,ij,kbj->kb", probs[:, :, 0].float(), self.le, probs[:, :, 1].float())

    def predict(self, p_cmp, probs):
        """(K, B) bool, the comparison of each pair, from the comparison probabilities p_cmp (K, B) and the digit
        probabilities probs (K, B, 2, 10), each averaged over an ensemble's members and test-time views."""
        if self.arch.head == "logic":
            pred = probs.argmax(-1)
            return pred[:, :, 0] <= pred[:, :, 1]
        if self.arch.head == "prob":
            return self.p_le(probs) > 0.5
        return p_cmp > 0.5

    def member_states(self, members: int) -> list[dict[str, torch.Tensor]]:
        """The weights of each round (its `members` consecutive members) as a state dict of a PairNet with
        k = members, on the CPU. Every per-member tensor has the members as equal consecutive blocks of its first
        dimension (grouped convolutions, batched linear layers, BatchNorm over K*C features); scalars (BatchNorm's
        step count) are shared."""
        rounds = self.k // members
        out = [{} for _ in range(rounds)]
        for key, t in self.state_dict().items():
            t = t.detach().cpu()
            for i in range(rounds):
                out[i][key] = t.clone() if t.dim() == 0 else t.reshape(rounds, -1)[i].reshape(
                    t.shape[0] // rounds, *t.shape[1:]).clone()
        return out


ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    """Add a named architecture to the registry (`digitpairs list`, studies and the tests pick it up)."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    ARCHS[arch.name] = arch.validate()
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
    if name not in ARCHS:
        raise UserError(f"unknown architecture {name!r}: choose from {', '.join(ARCHS)} (see `digitpairs list`)")
    return ARCHS[name]


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


def create_model(arch: Arch | str, cfg: Config, k: int = 1) -> PairNet:
    """A PairNet of K members for a registered name or an Arch; the Arch's own settings apply."""
    arch = get_arch(arch) if isinstance(arch, str) else arch
    return PairNet(arch, arch_config(arch, cfg), k)
