"""PairNet: the digit branch(es) and the comparison head, built from an Arch and a Config (the registry is in
spec/registry.py).

A PairNet holds K independent members (K = 1 for a single run; K rounds trained at once otherwise), each layer with a
separate set of weights per member (model/layers.py). Member k is therefore the same network, with the same
initialisation and the same random stream, whatever K is.

Output contract, for every architecture: forward(x) with x (K, B, 2, S, S) returns
  cmp    (K, B)        comparison logit, > 0 means "first digit <= second"
  digits (K, B, 2, 10) digit logits of the two images

A branch or head of your own (Arch.branch, Arch.head) is a Members module (model/members.py) in the same place,
with the same contract.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from digitpairs.kernels import batch_norm_relu
from digitpairs.model import members
from digitpairs.model.layers import KBatchNorm1d, KConv2d, KDropout, KLinear
from digitpairs.spec.arch import Arch
from digitpairs.spec.config import Config
from digitpairs.spec.registry import arch_config, get_arch
from digitpairs.spec.shapes import conv_sides, kernel_size


class Branch(nn.Module):
    """The digit branch, 2 conv + 2 fc layers, K members: images (N, K, S, S) -> digit logits (K, N, 10)."""

    def __init__(self, k: int, cfg: Config, bn: bool, dropout: bool, rngs: list):
        super().__init__()
        ks = kernel_size(cfg)
        c1, c2 = cfg.channels
        side = conv_sides(cfg)[2]  # after conv, pool, conv, pool: 4 at 28, 2 at 14 (unpadded)
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
        self.size = cfg.size
        if arch.branch is None:
            branches = [Branch(k, cfg, arch.bn, arch.dropout, self.rngs) for _ in range(n_branches)]
        else:  # yours: images (N, 1, S, S) -> digit logits (N, 10)
            branches = [members.create(arch.factory("branch"), (cfg.size,), k, self.rngs, arch.name, "branch",
                                       (1, cfg.size, cfg.size), (10,)) for _ in range(n_branches)]
        self.branches = nn.ModuleList(branches)
        if "head" in arch.own_parts:  # yours: the 20 digit probabilities -> one logit
            self.head = members.create(arch.factory("head"), (), k, self.rngs, arch.name, "head", (20,), (1,))
        elif arch.head == "mlp":  # 3 linear layers on the 20 digit probabilities
            h = cfg.head_hidden
            self.head = nn.ModuleList([KLinear(k, 20, h), KLinear(k, h, h), KLinear(k, h, 1)])
        else:  # "logic" and "prob": no parameters; the comparison follows from the two digit predictions
            self.head = nn.ModuleList()
            self.register_buffer("le", torch.ones(10, 10).triu(), persistent=False)  # le[i, j] = 1 if i <= j

    def own_parts(self) -> list[members.Members]:
        """The modules of yours, in the order a forward calls them (the branches, then the head)."""
        return [m for m in [*self.branches, self.head] if isinstance(m, members.Members)]

    def dropouts(self) -> list:
        """The dropout layers that draw, in the order a forward calls them (KDropout, MemberDropout)."""
        built_in = [b.drop for b in self.branches if isinstance(b, Branch) and isinstance(b.drop, KDropout)]
        return [d for d in built_in if d.p > 0] + [d for m in self.own_parts() for d in m.dropouts if d.p > 0]

    def draw_masks(self, b: int) -> list[torch.Tensor]:
        """The keep masks of a training forward on b pairs, drawn in the order the forward would draw them: a shared
        branch sees both images of every pair (2b rows), each unshared branch one image (b rows), a head b rows."""
        drops = self.dropouts()
        rows = {id(d): 2 * b // len(self.branches) for d in drops}
        if isinstance(self.head, members.Members):
            rows |= {id(d): b for d in self.head.dropouts}
        return [d.draw(rows[id(d)]) for d in drops]

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
        images = 2 // len(self.branches)  # per pair, through each branch
        total = self.k * sum(m.info.flops * (1 if m.role == "head" else images) for m in self.own_parts())
        try:
            size = self.size
            with torch.no_grad():
                self.eval()
                self(torch.zeros(self.k, 1, 2, size, size))
        finally:
            for h in hooks:
                h.remove()
        return total // self.k

    def seed(self, init_seeds: list[int], stream_seeds: list[int]) -> "PairNet":
        """Initialise member k from init_seeds[k] (PyTorch's default uniform bounds; a module of yours as its
        factory initialises it, from torch's generator seeded with init_seeds[k]) and reset its random stream."""
        for k, s_init in enumerate(init_seeds):
            with members.RNG_LOCK, torch.random.fork_rng(devices=[]):
                torch.manual_seed(s_init)
                for part in self.own_parts():  # one after another, so that two unshared branches differ
                    part.set_member(k, part.fresh())
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
        if self.arch.branch is not None:  # yours: (K, N, 1, S, S) -> (K, N, 10)
            if len(self.branches) == 1:
                digits = self.branches[0](x.reshape(k, b * 2, 1, s, s)).reshape(k, b, 2, 10)
            else:
                digits = torch.stack([br(x[:, :, i:i + 1]) for i, br in enumerate(self.branches)], dim=2)
        elif len(self.branches) == 1:  # both images through the same branch: (2B, K, S, S)
            digits = self.branches[0](x.permute(1, 2, 0, 3, 4).reshape(b * 2, k, s, s)).view(k, b, 2, 10)
        else:
            digits = torch.stack([br(x[:, :, i].transpose(0, 1)) for i, br in enumerate(self.branches)], dim=2)
        digits = digits.float()  # probabilities and the comparison in fp32, also under bf16 autocast
        probs = digits.softmax(-1)  # (K, B, 2, 10)
        if isinstance(self.head, members.Members):
            return self.head(probs.reshape(k, b, 20)).float(), digits
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


def create_model(arch: Arch | str, cfg: Config, k: int = 1) -> PairNet:
    """A PairNet of K members for a registered name or an Arch; the Arch's own settings apply."""
    arch = get_arch(arch) if isinstance(arch, str) else arch
    return PairNet(arch, arch_config(arch, cfg), k)


def own_path(arch: Arch, cfg: Config, device: str | torch.device | None = None) -> tuple[str, str, int]:
    """How an architecture's networks of yours train on a device (default cfg.device): net_path of its network;
    ("built-in", "", 0) for an architecture without any (spec.shapes sizes those)."""
    arch = get_arch(arch) if isinstance(arch, str) else arch
    if not arch.own:
        return "built-in", "", 0
    name = str(device or cfg.device)  # not resolved: a Ray driver without a GPU plans for its cluster's
    cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    return net_path(create_model(arch, cfg), cfg, torch.device("cuda" if cuda else "cpu"))


def net_path(net: PairNet, cfg: Config, device: torch.device) -> tuple[str, str, int]:
    """("batched" | "batched-random" | "looped" | "plain", why not batched, the bytes of one member's largest
    activation in a training step in fp32) for a network with parts of yours. "looped": vmap could batch it, but
    here it runs one member after another (model.members.Members.looped)."""
    parts = net.own_parts()
    modes = {"looped" if p.info.mode != "plain" and p.looped(device) else p.info.mode for p in parts}
    mode = next(m for m in ("plain", "looped", "batched-random", "batched") if m in modes)
    why = next((p.info.why for p in parts if p.info.mode == mode and p.info.why), "")
    if mode == "looped":
        why = "on the CPU its convolutions run faster one round at a time than batched"
    if device.type == "cpu" and mode in ("looped", "plain") and any(
            p.info.convs and not p.info.channels_last for p in parts):  # Members.plain: the probe said no
        why += ("; " if why else "") + ("its maps in NCHW memory, not channels-last (a .view that needs NCHW's "
                                        "strides, or random numbers of its own)")
    rows = {id(p): 1 if p.role == "head" else 2 // len(net.branches) for p in parts}  # images per pair
    return mode, why, max(p.info.act_bytes * rows[id(p)] for p in parts) * cfg.batch_size
