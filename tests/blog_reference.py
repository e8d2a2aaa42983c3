# ruff: noqa: E501
"""The blog's Gen_net and Dis_net, transcribed from ../shared/seed/ (indentation restored, nothing else).

Kept apart from gan_core so that the replica test compares against the blog's text, not against
our own construction of it.
"""

import torch.nn as nn

init_channel = 100


class Gen_net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_channels=init_channel, out_channels=768, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(in_channels=768, out_channels=384, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(in_channels=384, out_channels=192, kernel_size=3, stride=2, padding=0, bias=False),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(in_channels=192, out_channels=96, kernel_size=2, stride=2, padding=0, bias=False),
            nn.BatchNorm2d(96),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(in_channels=96, out_channels=48, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels=48, out_channels=24, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels=24, out_channels=12, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels=12, out_channels=6, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels=6, out_channels=3, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(3),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x)


class Dis_net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels=3, out_channels=6, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(6),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=6, out_channels=12, kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(12),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=12, out_channels=24, kernel_size=3, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(24),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=24, out_channels=48, kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(48),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=48, out_channels=96, kernel_size=3, stride=1, padding=0, bias=True),
            nn.BatchNorm2d(96),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=96, out_channels=192, kernel_size=4, stride=1, padding=0, bias=True),
            nn.BatchNorm2d(192),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=192, out_channels=384, kernel_size=3, stride=2, padding=0, bias=True),
            nn.BatchNorm2d(384),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=384, out_channels=768, kernel_size=4, stride=1, padding=0, bias=True),
            nn.BatchNorm2d(768),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(in_channels=768, out_channels=1, kernel_size=5, stride=1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x).view(-1)


def blog_loop(dataloader, max_epoch, dis_step, gen_step):
    """The blog's training loop, transcribed: its D block and its G block are the two callbacks (the models,
    losses and plots are left out; which batch each step gets and when is all that is kept)."""
    for epoch in range(max_epoch):  # noqa: B007 - the blog's own loop variable
        for it, (img, _) in enumerate(dataloader):
            real_pic = img
            if it % 5 == 0:
                dis_step(real_pic)
            if it % 1 == 0:
                gen_step()
