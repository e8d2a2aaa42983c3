"""K members of one family member trained as one network: the first building block of packed seeds (issue 12).

Every convolution becomes a grouped one (groups=K) whose group m holds member m's weights, every BatchNorm
runs over K x C channels (so each member keeps its own statistics) and the activations are elementwise:
member m's slice of the packed network computes exactly what member m computes alone, and no weight of one
member ever touches another's activations. With the loss taken as the sum of the members' own mean losses,
each member's gradient is its solo gradient, and an elementwise optimizer (Adam, Adadelta, RMSprop, SGD)
gives each member its solo update.

Layout: a packed generator maps noise [N, K, latent] to images [N, K, C, H, W]; a packed discriminator maps
images [N, K, C, H, W] to logits [N, K]. ``PackedSteps`` is gan_core.training.loop.GanSteps for K seeds: each
member draws its real batches and noise from its own RNG stream, in its solo run's order.

What is not here yet: train() over a PackedSteps (per-member run folders, stats, checkpoints, resume), the
CLI's --seeds, the studies' use of it, and the CUDA benchmarks that decide whether packing pays (on the
2-core CPU a probe measured it slower, 0.63x at K=3).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from gan_core.errors import ConfigError
from gan_core.training import sampling
from gan_core.training.config import RunConfig
from gan_core.training.loop import GanSteps, build_models, gan_loss, make_optimizer
from gan_core.training.models import Discriminator, Generator

# each parameter's update depends on that parameter's own gradient only: a member's update is its solo update
ELEMENTWISE_OPTIMIZERS = ("Adadelta", "Adam", "RMSprop", "SGD")

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


def pack(members: list[Generator] | list[Discriminator]) -> PackedGenerator | PackedDiscriminator:
    """The K members as one network, each member's weights, buffers and BatchNorm statistics copied exactly."""
    if not members:
        raise ValueError("nothing to pack")
    return PackedGenerator(members) if isinstance(members[0], Generator) else PackedDiscriminator(members)


def member_state(packed: PackedGenerator | PackedDiscriminator, m: int) -> dict[str, torch.Tensor]:
    """Member m's state dict, keyed as its solo network's: what its own checkpoint and samples need."""
    state = {}
    for name, value in packed.state_dict().items():
        if value.dim() == 0:  # num_batches_tracked: counted once for all members, the same for each
            state[name] = value.clone()
            continue
        size = value.shape[0] // packed.k
        state[name] = value[m * size:(m + 1) * size].clone()
    return state


class PackedSteps:
    """K seeds of one configuration trained as one network: GanSteps' D and G steps, for every member at once.

    Member m starts from its solo run's initial weights (``torch.manual_seed(seed)``, then the models are built),
    draws its batches and noise from its solo run's RNG stream (seed + 1), in the same order, and its loss is its
    solo loss; the packed loss is the members' sum, so each member's gradient is its own. A step returns the
    members' losses, [K], without a host sync.
    """

    def __init__(self, cfg: RunConfig, seeds: list[int], images: torch.Tensor, device: torch.device):
        for which, opt in (("generator", cfg.g_optim), ("discriminator", cfg.d_optim)):
            if opt.name not in ELEMENTWISE_OPTIMIZERS:
                raise ConfigError(f"{opt.name} for the {which} cannot train packed seeds (its update couples "
                                  f"parameters); choose one of: {', '.join(ELEMENTWISE_OPTIMIZERS)}")
        m, sch = cfg.model, cfg.schedule
        self.cfg, self.device, self.batch, self.k = cfg, device, sch.batch_size, len(seeds)
        solo = []
        for seed in seeds:  # exactly GanSteps' initialisation, one member after the other
            torch.manual_seed(seed)
            solo.append(build_models(dataclasses.replace(cfg, seed=seed)))
        self.g_net = pack([g for g, _ in solo]).to(device).train()
        self.d_net = pack([d for _, d in solo]).to(device).train()
        self.opt_g = make_optimizer(self.g_net.parameters(), cfg.g_optim)
        self.opt_d = make_optimizer(self.d_net.parameters(), cfg.d_optim)
        self.rngs = [torch.Generator(device=device).manual_seed(seed + 1) for seed in seeds]
        self.real = sampling.to_float(images.to(device), m.head, m.channels)
        shape = (sch.batch_size, m.latent_dim)
        pairs = [(torch.randn(shape, device=device, generator=r), torch.randn(shape, device=device, generator=r))
                 for r in self.rngs]  # per member: its d_noise, then its g_noise, as GanSteps draws them
        self.d_noise = torch.stack([d for d, _ in pairs], 1)
        self.g_noise = torch.stack([g for _, g in pairs], 1)
        self.ones = torch.ones(sch.batch_size, device=device)
        self.zeros = torch.zeros(sch.batch_size, device=device)
        self.loss_fn = gan_loss(sch.loss)

    def _noise(self, reused: torch.Tensor) -> torch.Tensor:
        if self.cfg.schedule.reuse_noise:
            return reused
        return torch.stack([torch.randn(reused.shape[0], reused.shape[2], device=self.device, generator=r)
                            for r in self.rngs], 1)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.loss_fn(logits[:, i], target) for i in range(self.k)])  # [K], each a solo loss

    def d_step(self) -> torch.Tensor:
        picks = [torch.randint(len(self.real), (self.batch,), device=self.device, generator=r) for r in self.rngs]
        x = torch.stack([self.real[i] for i in picks], 1)  # drawn before the noise, as GanSteps.d_step does
        z = self._noise(self.d_noise)
        with torch.no_grad():
            fake = self.g_net(z)
        losses = self._loss(self.d_net(x), self.ones) + self._loss(self.d_net(fake), self.zeros)
        self.opt_d.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt_d.step()
        return losses.detach()

    def g_step(self) -> torch.Tensor:
        losses = self._loss(self.d_net(self.g_net(self._noise(self.g_noise))), self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt_g.step()
        return losses.detach()

    iteration = GanSteps.iteration  # d_steps D steps, then g_steps G steps; each loss here is [K]
