"""Two baseline training loops, written the way people usually write them, for the speed comparison.

- ``BlogStyleLoop``: the blog's loop (../shared/seed/): digits stored as PNG files in an ImageFolder
  tree, decoded by PIL through torchvision transforms and a DataLoader (batch 100, no workers, no
  shuffle), ``if it % 5 == 0`` D step, a G step every batch, the same two noise batches every step,
  a ``.detach().numpy()`` host sync and a ``plt.scatter`` call after every step.
- ``ExampleStyleLoop``: pytorch/examples' ``dcgan/main.py``: a DataLoader (shuffled) over a
  TensorDataset of float images, ``.item()`` after every step, a D step then a G step that reuses
  the D step's fake batch.

Both take the model, optimizers, batch and D:G schedule from the same RunConfig as
``gan_core.training.loop.GanSteps``, so that one ``iteration()`` of any of the three is the same training
work: d_steps D steps and g_steps G steps on the same networks (tests/test_benchmarks_reference.py
checks this). What differs is how each loop feeds, syncs and logs, which is what is measured.
Where a loop's own idiom computes more or less than GanSteps (the blog's G steps also compute D's
weight gradients; the example's first G step reuses the D step's fake batch), it is kept: that is
the cost of writing a loop that way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gan_core.training import models, sampling
from gan_core.training.accounting import build_models
from gan_core.training.config import RunConfig
from gan_core.training.loop import GanSteps, make_optimizer

PLOT_CLEAR_EVERY = 500  # scatter calls between plt.clf(): the blog's figure only grows, a benchmark's must not


def write_image_folder(images: torch.Tensor, labels: torch.Tensor, root: str | Path) -> Path:
    """uint8 [N, 1, H, W] digits -> ``root/<label>/<index>.png``, like the blog's ``train_net_pic/``.

    Setup, not timed. The PNGs are lossless grey images; ImageFolder's loader turns them into RGB.
    """
    from PIL import Image

    root = Path(root)
    for i, (img, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(folder / f"{i:05d}.png")
    return root


class _Loop:
    """What the three loops share: the same networks, initialisation and optimizers as GanSteps."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.batch = cfg.schedule.batch_size
        self.d_steps, self.g_steps = cfg.schedule.d_steps, cfg.schedule.g_steps
        torch.manual_seed(cfg.seed)  # as GanSteps: the same seed gives the same initial weights
        self.g_net, self.d_net = build_models(cfg)
        self.g_net.to(device).train()
        self.d_net.to(device).train()
        self.opt_g = make_optimizer(self.g_net.parameters(), cfg.g_optim)
        self.opt_d = make_optimizer(self.d_net.parameters(), cfg.d_optim)
        # Both loops use the loss as their authors wrote it: BCELoss on a Sigmoid output (the blog's
        # D ends in nn.Sigmoid; ours returns the logit), or BCEWithLogitsLoss for the "bce_logits" configs.
        if cfg.schedule.loss == "bce":
            bce = nn.BCELoss()
            self.loss = lambda logits, target: bce(torch.sigmoid(logits), target)
        else:
            self.loss = nn.BCEWithLogitsLoss()

    def warm_up(self) -> None:
        """One D step and one G step, so that the timed rounds see allocated memory and built kernels."""
        raise NotImplementedError

    def iteration(self) -> None:
        raise NotImplementedError


class ProjectLoop(GanSteps):
    """GanSteps with the benchmarks' warm-up: the project loop, as gan_core.training.loop.train runs it."""

    def warm_up(self) -> None:
        self.iteration(g_steps=1)


class BlogStyleLoop(_Loop):
    """The blog's loop, one ``iteration()`` = g_steps DataLoader batches.

    Two changes, both needed for an equal-work comparison, none for speed: ``it`` counts batches
    across epochs (the blog's restarts every epoch, so with its 9 batches an epoch it makes 2 D steps
    per 9 G steps, not 1:5), and the last short batch of an epoch is dropped. A D:G ratio other
    than 1:g runs its d_steps D steps on the same real batch.
    """

    def __init__(self, cfg: RunConfig, folder: str | Path, device: torch.device):
        super().__init__(cfg, device)
        import matplotlib
        import torchvision

        matplotlib.use("Agg")  # the blog plots to the screen; a benchmark must run headless
        import matplotlib.pyplot as plt

        self.plt = plt
        m = cfg.model
        tf = [torchvision.transforms.Resize([models.IMAGE_SIZE, models.IMAGE_SIZE]),
              torchvision.transforms.ToTensor()]  # the blog's transforms: PIL RGB -> float [3, 32, 32] in [0, 1]
        if m.channels == 1:
            tf.insert(0, torchvision.transforms.Grayscale(1))
        if m.head == "tanh":  # the usual [-1, 1] scaling for a Tanh generator
            tf.append(torchvision.transforms.Normalize([0.5] * m.channels, [0.5] * m.channels))
        dataset = torchvision.datasets.ImageFolder(root=str(folder), transform=torchvision.transforms.Compose(tf))
        if len(dataset) < self.batch:
            raise ValueError(f"the image folder {folder} holds {len(dataset)} images, fewer than one batch")
        self.dataloader = DataLoader(dataset, batch_size=self.batch, num_workers=0, drop_last=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # the blog never sets it; GanSteps may have set it globally
        self.true_label = torch.ones(self.batch).to(device)
        self.fake_label = torch.zeros(self.batch).to(device)
        noise_shape = (self.batch, m.latent_dim, 1, 1)
        self.init_tensor = torch.randn(noise_shape).to(device)  # the blog's two noise batches, reused every step
        self.gen_init_tensor = torch.randn(noise_shape).to(device)
        self.epoch, self.it, self.plots = 0, 0, 0
        self._batches = iter(self.dataloader)

    def _next_batch(self) -> torch.Tensor:
        try:
            img, _ = next(self._batches)
        except StopIteration:  # a new epoch: the blog's outer ``for epoch`` loop re-iterates the DataLoader
            self.epoch += 1
            self._batches = iter(self.dataloader)
            img, _ = next(self._batches)
        return img

    def _plot(self, value: np.ndarray, colour: str) -> None:
        self.plt.scatter(self.epoch, value, c=colour)
        self.plots += 1
        if self.plots % PLOT_CLEAR_EVERY == 0:
            self.plt.clf()

    def d_step(self, real_pic: torch.Tensor) -> None:
        self.opt_d.zero_grad()
        real_output = self.d_net(real_pic)
        dis_real_loss = self.loss(real_output, self.true_label)
        fake_pic = self.g_net(self.init_tensor.detach()).detach()  # the blog: G's graph is built, then dropped
        fake_output = self.d_net(fake_pic)
        dis_fake_loss = self.loss(fake_output, self.fake_label)
        dis_loss = dis_fake_loss + dis_real_loss
        dis_loss.backward()
        self.opt_d.step()
        # note: a host sync per step (the blog's .detach().numpy(); .cpu() makes it run on CUDA too).
        self._plot(dis_loss.detach().cpu().numpy(), "r")

    def g_step(self) -> None:
        self.opt_g.zero_grad()
        gen_pic = self.g_net(self.gen_init_tensor)
        gen_output = self.d_net(gen_pic)  # D's weights keep requires_grad: their gradients are computed too
        gen_loss = self.loss(gen_output, self.true_label)
        gen_loss.backward()
        self.opt_g.step()
        self._plot(gen_loss.detach().cpu().numpy(), "b")

    def warm_up(self) -> None:
        self.d_step(self._next_batch().to(self.device))
        self.g_step()

    def iteration(self) -> None:
        for _ in range(self.g_steps):
            real_pic = self._next_batch().to(self.device)  # decoded and copied even when no D step uses it
            if self.it % self.g_steps == 0:
                for _ in range(self.d_steps):
                    self.d_step(real_pic)
            self.g_step()
            self.it += 1


class ExampleStyleLoop(_Loop):
    """pytorch/examples' DCGAN loop, one ``iteration()`` = d_steps D steps then g_steps G steps.

    As in the example, each D step draws a shuffled batch and fresh noise, and the first G step
    reuses the last D step's fake batch (the example makes exactly one G step per D step); further
    G steps of a 1:g schedule draw fresh noise. The last short batch of an epoch is dropped.
    """

    def __init__(self, cfg: RunConfig, images: torch.Tensor, device: torch.device):
        super().__init__(cfg, device)
        m = cfg.model
        dataset = TensorDataset(sampling.to_float(images, m.head, m.channels))  # float images on the CPU
        if len(dataset) < self.batch:
            raise ValueError(f"{len(dataset)} training images are fewer than one batch of {self.batch}")
        self.dataloader = DataLoader(dataset, batch_size=self.batch, shuffle=True, num_workers=0, drop_last=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the example sets it
        self.latent_dim = m.latent_dim
        self.real_label, self.fake_label = 1.0, 0.0
        self.log: tuple[float, ...] = ()
        self.epoch = 0
        self._batches = iter(self.dataloader)
        self._fake: torch.Tensor | None = None

    def _next_batch(self) -> torch.Tensor:
        try:
            (real_cpu,) = next(self._batches)
        except StopIteration:
            self.epoch += 1
            self._batches = iter(self.dataloader)
            (real_cpu,) = next(self._batches)
        return real_cpu

    def d_step(self) -> None:
        real = self._next_batch().to(self.device)
        self.d_net.zero_grad()
        label = torch.full((self.batch,), self.real_label, dtype=torch.float, device=self.device)
        output = self.d_net(real).view(-1)
        err_d_real = self.loss(output, label)
        err_d_real.backward()
        d_x = output.mean().item()  # note: the example's host syncs, one per .item()
        noise = torch.randn(self.batch, self.latent_dim, 1, 1, device=self.device)
        fake = self.g_net(noise)
        label.fill_(self.fake_label)
        output = self.d_net(fake.detach()).view(-1)
        err_d_fake = self.loss(output, label)
        err_d_fake.backward()
        d_g_z1 = output.mean().item()
        err_d = err_d_real + err_d_fake
        self.opt_d.step()
        self._fake = fake
        self.log = (err_d.item(), d_x, d_g_z1)

    def g_step(self) -> None:
        fake = self._fake
        if fake is None:  # the G steps after the first of a 1:g schedule: fresh noise, as a D step would draw
            fake = self.g_net(torch.randn(self.batch, self.latent_dim, 1, 1, device=self.device))
        self._fake = None
        self.g_net.zero_grad()
        label = torch.full((self.batch,), self.real_label, dtype=torch.float, device=self.device)
        output = self.d_net(fake).view(-1)  # D's weights keep requires_grad, as in the example
        err_g = self.loss(output, label)
        err_g.backward()
        d_g_z2 = output.mean().item()
        self.opt_g.step()
        self.log = (*self.log[:3], err_g.item(), d_g_z2)

    def warm_up(self) -> None:
        self.d_step()
        self.g_step()

    def iteration(self) -> None:
        for _ in range(self.d_steps):
            self.d_step()
        for _ in range(self.g_steps):
            self.g_step()


LOOPS = ("project", "blog", "example")


def make_loop(name: str, cfg: RunConfig, images: torch.Tensor, device: torch.device,
              folder: str | Path | None = None):
    """One of LOOPS on uint8 training images [N, 1, 32, 32]; the blog loop reads ``folder`` instead."""
    if name == "project":
        return ProjectLoop(cfg, images, device)
    if name == "blog":
        if folder is None:
            raise ValueError("the blog-style loop reads an image folder: write one with write_image_folder")
        return BlogStyleLoop(cfg, folder, device)
    if name == "example":
        return ExampleStyleLoop(cfg, images, device)
    raise ValueError(f"unknown loop {name!r}; choose one of: {', '.join(LOOPS)}")
