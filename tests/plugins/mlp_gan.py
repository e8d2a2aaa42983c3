"""A tiny MLP GAN plugged into the suite: `python -m gan_core.train --arch tests.plugins.mlp_gan:build`.

The builder takes the family's knobs it has a use for (width, channels, head, latent_dim) and returns (G, D):
G maps noise [B, latent_dim] to images [B, channels, 32, 32] in the head's range, D maps images to one logit each.
"""

from torch import nn

SIZE = 32


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int, hidden: int, channels: int, head: str):
        super().__init__()
        self.latent_dim, self.channels = latent_dim, channels
        out = nn.Tanh() if head == "tanh" else nn.Sigmoid()  # tanh: [-1, 1]; sigmoid heads: [0, 1]
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels * SIZE * SIZE), out)

    def forward(self, z):  # [B, latent_dim] -> [B, C, 32, 32]
        return self.net(z).view(len(z), self.channels, SIZE, SIZE)


def build(width: float = 1.0, channels: int = 1, head: str = "tanh", latent_dim: int = 100):
    hidden = max(8, round(256 * width))
    g = MLPGenerator(latent_dim, hidden, channels, head)
    d = nn.Sequential(nn.Flatten(), nn.Linear(channels * SIZE * SIZE, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    return g, d


def wrong_size(width: float = 1.0, channels: int = 1, head: str = "tanh", latent_dim: int = 100):
    """A generator that draws 28x28: refused before training."""
    g, d = build(width, channels, head, latent_dim)
    g.net[-2] = nn.Linear(g.net[-2].in_features, channels * 28 * 28)
    g.forward = lambda z: g.net(z).view(len(z), channels, 28, 28)
    return g, d


def two_logits(width: float = 1.0, channels: int = 1, head: str = "tanh", latent_dim: int = 100):
    g, _ = build(width, channels, head, latent_dim)
    return g, nn.Sequential(nn.Flatten(), nn.Linear(channels * SIZE * SIZE, 2))


def not_a_pair(**knobs):
    return build(**{k: v for k, v in knobs.items() if k in ("width", "channels", "head", "latent_dim")})[0]
