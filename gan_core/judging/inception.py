"""Inception-v3 (torch-fidelity's ``inception-v3-compat``) for comparison with published numbers.

Offline only: the weights come from a file the user names (``--inception-weights PATH``) or from
torch's hub cache, where torch-fidelity's own download would have put them. Without either, one
line says where to put the file; torch-fidelity's downloader (which has no timeout) is never
reached, because it is only called when no weights path is passed.

MNIST digits are grey 32x32: they are copied to 3 channels and resized to 299x299 by
torch-fidelity's extractor, the usual (and questionable) way such numbers are made in papers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gan_core.errors import UserError, first_line
from gan_core.judging import extractor
from gan_core.judging.features import Extractor, fidelity_module

FIDELITY_NAME = "inception-v3-compat"
POOL3 = "2048"  # the layer of every published FID/KID
DEFAULT_LAYER = POOL3


def weights_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def hub_cache_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the downloaded weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url())


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception-v3 weights file to use; a UserError (one line) when there is none offline."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"Inception-v3 weights file {p} not found; give the path of "
                            f"{os.path.basename(weights_url())} (from {weights_url()})")
        return p
    p = hub_cache_path()
    if not p.is_file():
        raise UserError(f"Inception-v3 weights are not available offline: pass --inception-weights PATH "
                        f"(torch-fidelity's {p.name}, from {weights_url()}) or put the file at {p}")
    return p


def inception_extractor(weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                        layer: str | None = None, batch_size: int = 50) -> Extractor:
    """torch-fidelity's Inception-v3 with local weights. ``layer``: '64', '192', '768' or '2048' (default)."""
    layer = layer or DEFAULT_LAYER
    path = resolve_weights(weights)
    sha = extractor.sha256_file(path)
    try:
        module = fidelity_module(FIDELITY_NAME, [layer], feature_extractor_weights_path=str(path))
    except Exception as e:  # noqa: BLE001 - any failure to load the file is the same user-facing problem
        detail = first_line(e)
        raise UserError(f"{path} is not torch-fidelity Inception-v3 weights ({type(e).__name__}: {detail[:200]})") \
            from None
    name = f"{FIDELITY_NAME}-{sha[:8]}" + ("" if layer == POOL3 else f"-pool{layer}")  # other layers, other numbers
    return Extractor(name, module, layer, None, {"weights_sha256": sha}, rgb=True,
                     device=device, batch_size=batch_size)
