"""K members of one configuration as one network: how GanSteps trains K seeds in one pass.

Every convolution becomes a grouped one (groups=K) whose group m holds member m's weights, every BatchNorm
runs over K x C channels (so each member keeps its own statistics) and the activations are elementwise:
member m's slice of the packed network computes exactly what member m computes alone, and no weight of one
member ever touches another's activations. With the loss taken as the sum of the members' own mean losses,
each member's gradient is its solo gradient, and an elementwise optimizer (ELEMENTWISE_OPTIMIZERS: Adam,
Adadelta, RMSprop, SGD, ...) gives each member its solo update.

Layout: a packed generator maps noise [N, K, latent] to images [N, K, C, H, W]; a packed discriminator maps
images [N, K, C, H, W] to logits [N, K]. Every packed parameter (and every optimizer state tensor shaped like
one) holds member m's part in slice m of K along dim 0, which is how a member's solo checkpoint is cut out of
the pack and put back in. K = 1 is a solo run: the same layers, the same arithmetic.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gan_core.errors import ConfigError
from gan_core.training import plugin_arch
from gan_core.training.config import RunConfig
from gan_core.training.models import Discriminator, Generator

# Each parameter's update depends on that parameter's own gradient and state only (and on the shared step count):
# a member's update is its solo update. Not here: Adafactor (its second moments are factored over a weight's rows
# and columns, which span members), Muon (orthogonalises whole matrices), LBFGS and SparseAdam (never usable).
ELEMENTWISE_OPTIMIZERS = ("ASGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop",
                          "Rprop", "SGD")

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)


def _packed_layer(layers: list[nn.Module]) -> nn.Module:
    """One packed layer from the K members' layers at the same position (same type and shape)."""
    first, k = layers[0], len(layers)
    shapes = [[v.shape for v in layer.state_dict().values()] for layer in layers]
    if any(type(layer) is not type(first) for layer in layers) or any(s != shapes[0] for s in shapes):
        raise ValueError("members differ in architecture: only members of one configuration can be packed")
    if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)):
        if first.groups != 1:
            raise ValueError("a member's convolution is grouped already")
        conv = type(first)(first.in_channels * k, first.out_channels * k, first.kernel_size, first.stride,
                           first.padding, groups=k, bias=first.bias is not None, device=first.weight.device,
                           dtype=first.weight.dtype)
        with torch.no_grad():  # Conv2d weights are [out, in/g, ...], ConvTranspose2d [in, out/g, ...]: dim 0 either way
            conv.weight.copy_(torch.cat([layer.weight for layer in layers]))
            if conv.bias is not None:
                conv.bias.copy_(torch.cat([layer.bias for layer in layers]))
        return conv
    if isinstance(first, nn.BatchNorm2d):
        norm = nn.BatchNorm2d(first.num_features * k, first.eps, first.momentum, first.affine,
                              first.track_running_stats, device=first.weight.device, dtype=first.weight.dtype)
        norm.load_state_dict({name: torch.cat([layer.state_dict()[name] for layer in layers])
                              if value.dim() else value.clone() for name, value in first.state_dict().items()})
        return norm
    if isinstance(first, ELEMENTWISE):
        return type(first)(**_elementwise_args(first))
    raise ValueError(f"cannot pack a {type(first).__name__} layer")


def _elementwise_args(layer: nn.Module) -> dict:
    if isinstance(layer, nn.LeakyReLU):
        return {"negative_slope": layer.negative_slope, "inplace": layer.inplace}
    if isinstance(layer, nn.ReLU):
        return {"inplace": layer.inplace}
    return {}


def _pack_net(nets: list[nn.Sequential]) -> nn.Sequential:
    if len({len(net) for net in nets}) != 1:
        raise ValueError("members differ in depth: only members of one configuration can be packed")
    return nn.Sequential(*(_packed_layer(list(layers)) for layers in zip(*nets, strict=True)))


class PackedGenerator(nn.Module):
    def __init__(self, members: list[Generator]):
        super().__init__()
        self.k, self.latent_dim = len(members), members[0].latent_dim
        self.net = _pack_net([g.net for g in members])

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [N, K, latent] -> [N, K, C, H, W]
        out = self.net(z.reshape(z.shape[0], self.k * self.latent_dim, 1, 1))
        return out.view(out.shape[0], self.k, -1, *out.shape[2:])


class PackedDiscriminator(nn.Module):
    def __init__(self, members: list[Discriminator]):
        super().__init__()
        self.k = len(members)
        self.net = _pack_net([d.net for d in members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, K, C, H, W] -> [N, K]
        return self.net(x.reshape(x.shape[0], -1, *x.shape[3:])).view(x.shape[0], self.k)


class Solo(nn.Module):
    """One network the packer cannot pack (a user's --arch), as a pack of one: [N, 1, ...] in, [N, 1, ...] out.

    Its state dict is the network's own, so that member_state and packed_state need no special case."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.k, self.net = 1, net
        self.latent_dim = getattr(net, "latent_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # G: [N, 1, latent] -> [N, 1, C, H, W]; D: -> [N, 1]
        out = self.net(x[:, 0])
        return out.unsqueeze(1) if out.dim() > 2 else out.reshape(len(out), 1)

    def state_dict(self, *args, **kwargs):
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state, *args, **kwargs):
        return self.net.load_state_dict(state, *args, **kwargs)


def pack(members: list[Generator] | list[Discriminator]) -> PackedGenerator | PackedDiscriminator | Solo:
    """The K members as one network, each member's weights, buffers and BatchNorm statistics copied exactly."""
    if not members:
        raise ValueError("nothing to pack")
    if isinstance(members[0], Generator):
        return PackedGenerator(members)
    if isinstance(members[0], Discriminator):
        return PackedDiscriminator(members)
    if len(members) == 1:
        return Solo(members[0])
    raise ValueError(f"cannot pack a {type(members[0]).__name__}: only the family's Generator and Discriminator "
                     "(a Sequential of convolutions, BatchNorm and elementwise activations) pack")


def check_packable(cfg: RunConfig) -> None:
    """Refuse, in one line, a configuration whose optimizer would couple the members of a pack, or a user's model
    (--arch module:function) that the packer cannot pack."""
    for which, opt in (("generator", cfg.g_optim), ("discriminator", cfg.d_optim)):
        if opt.name not in ELEMENTWISE_OPTIMIZERS:
            raise ConfigError(f"{opt.name} for the {which} cannot train packed seeds (its update mixes "
                              f"the members' weights); choose one of: {', '.join(ELEMENTWISE_OPTIMIZERS)}, or one seed")
    if plugin_arch.is_plugin(cfg.model.arch):
        with torch.device("meta"):  # two members, as shapes only
            pairs = [plugin_arch.build(cfg.model) for _ in range(2)]
        for i, which in enumerate(("generator", "discriminator")):
            try:
                pack([pair[i] for pair in pairs])
            except ValueError as e:
                raise ConfigError(f"--arch {cfg.model.arch}: its {which} cannot train packed seeds ({e}); "
                                  "train one seed per pass") from None


def _slice(value, m: int, k: int):
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        size = value.shape[0] // k
        return value[m * size:(m + 1) * size].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value  # a step count: the same for every member


def member_state(packed: PackedGenerator | PackedDiscriminator, m: int) -> dict[str, torch.Tensor]:
    """Member m's state dict, keyed as its solo network's: what its own checkpoint and samples need."""
    return {name: _slice(value, m, packed.k) for name, value in packed.state_dict().items()}


def member_optimizer_state(state: dict, m: int, k: int) -> dict:
    """Member m's part of a packed optimizer's state dict: a solo optimizer's state dict (same parameter order)."""
    return {"state": {i: {key: _slice(v, m, k) for key, v in s.items()} for i, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


def _joined(values: list):
    first = values[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return torch.cat(values)
    return first


def packed_state(states: list[dict]) -> dict:
    """The inverse of member_state: K members' solo state dicts as one packed state dict."""
    return {name: _joined([s[name] for s in states]) for name in states[0]}


def packed_optimizer_state(states: list[dict]) -> dict:
    """The inverse of member_optimizer_state; the members must be at the same step (their counts are shared)."""
    return {"state": {i: {key: _joined([s["state"][i][key] for s in states]) for key in first}
                      for i, first in states[0]["state"].items()},
            "param_groups": states[0]["param_groups"]}


def finite_members(*packed: PackedGenerator | PackedDiscriminator) -> torch.Tensor:
    """[K] bool: whether every parameter of member m is finite (one reduction per tensor, on the device)."""
    k = packed[0].k
    checks = [torch.isfinite(p.detach().reshape(k, -1).float()).all(dim=1) for net in packed for p in net.parameters()]
    return torch.stack(checks).all(dim=0)
