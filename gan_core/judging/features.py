"""Images -> features through a torch-fidelity feature extractor: batched, deterministic, disk-cached.

Both sides of every metric go through ``Extractor.__call__``: generated and real images are uint8
[N, 1, 32, 32] and meet the same network the same way. Real-data features are cached on disk under a
SHA-256 of everything they depend on: the images' bytes (which is the split's content; the split's
fingerprint goes in too), the extractor's name and weights hash, its preprocessing, the device type
and the torch version. Each entry also carries a SHA-256 of its own content, checked when read: a damaged
entry is recomputed (with a logged warning), never used. torch-fidelity's own cache is keyed on a name only
and would return stale features when the data changes, so it is never used (``cache=False`` everywhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from gan_core import files
from gan_core.errors import UserError
from gan_core.judging import extractor

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the cache file layout or the key's meaning changes
CACHE_ENV = files.CACHE_ENV


@dataclass(frozen=True)
class FeatureSet:
    features: torch.Tensor  # float32 [N, D] on the CPU: FID, KID, precision/recall
    logits: torch.Tensor | None = None  # float32 [N, 10] from the MNIST classifier: classifier score, modes

    def __len__(self) -> int:
        return len(self.features)


class Extractor:
    """A torch-fidelity feature extractor as the metrics see it.

    ``name`` identifies the network *and its weights* (``mnist-cnn-v1-1a2b3c4d``,
    ``inception-v3-compat-6726825d``); every metric value travels with it. ``key`` holds everything
    else the features depend on and goes into cache keys.
    """

    def __init__(self, name: str, module: torch.nn.Module, feature_layer: str, logits_layer: str | None,
                 key: dict, rgb: bool, device: torch.device | str = "cpu", batch_size: int = 500):
        self.name = name
        self.module = module.to(device).eval()
        self.feature_layer = feature_layer
        self.logits_layer = logits_layer
        self.key = {"name": name, "feature_layer": feature_layer, "logits_layer": logits_layer, "rgb": rgb, **key}
        self.rgb = rgb  # the network wants 3 channels: grey is copied (as torch-fidelity's own loaders do)
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> FeatureSet:
        """uint8 [N, 1, H, W] -> FeatureSet on the CPU. Eval mode, no randomness: the same images give the
        same features on one machine, whatever the batch size (up to float rounding)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"features are computed from uint8 images [N, C, H, W], got {images.dtype} "
                            f"{list(images.shape)}; quantise with gan_core.training.sampling.to_uint8 first")
        if len(images) == 0:
            raise ValueError("no images to compute features from")
        feats, logits = [], []
        for i in range(0, len(images), self.batch_size):
            batch = images[i:i + self.batch_size].to(self.device)
            if self.rgb and batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            out = self.module.convert_features_tuple_to_dict(self.module(batch))
            # note: .cpu() syncs with the device once per batch; batches are large, so this costs little.
            feats.append(out[self.feature_layer].float().cpu())
            if self.logits_layer is not None:
                logits.append(out[self.logits_layer].float().cpu())
        return FeatureSet(torch.cat(feats), torch.cat(logits) if logits else None)


def fidelity_module(name: str, layers: list[str], **kwargs) -> torch.nn.Module:
    """Build a registered torch-fidelity extractor on the CPU, exactly as calculate_metrics would."""
    from torch_fidelity.utils import create_feature_extractor

    return create_feature_extractor(name, layers, cuda=False, verbose=False, **kwargs)


# The MNIST judges' batch: on the CPU a batch of 100 keeps MnistCNN's 32x32 activations in cache, the same features
# bit for bit; measured on the 2-core AMD EPYC, one thread, 1,000 digits: 1.33 s at 500, 0.77 s at 100, 0.80 at 50
MNIST_BATCH = 100


def mnist_extractor(device: torch.device | str = "cpu", weights: str | os.PathLike | None = None,
                    batch_size: int = MNIST_BATCH, judge: extractor.Judge = extractor.FIRST) -> Extractor:
    """A shipped MNIST judge (default the first, MnistCNN), through its torch-fidelity registration; its logits
    only for the judge whose classifier metrics are reported (``Judge.classifier``)."""
    weights = weights or judge.weights
    name = extractor.register(weights, judge)
    module = fidelity_module(name, [extractor.FEATURES, extractor.LOGITS])
    # the name (in the key) carries the architecture and weights hash: one judge's cache is never the other's
    key = {"weights_sha256": extractor.weights_sha256(weights), "preprocess": extractor.PREPROCESS}
    return Extractor(name, module, extractor.FEATURES, extractor.LOGITS if judge.classifier else None, key,
                     rgb=False, device=device, batch_size=batch_size)


# --- the disk cache --------------------------------------------------------------------------------


def cache_key(ex: Extractor, images: torch.Tensor, tags: dict) -> str:
    parts = {"format": CACHE_FORMAT, "extractor": ex.key, "images_sha256": files.content_sha256(images),
             "tags": tags, "device": ex.device.type, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_features(ex: Extractor, images: torch.Tensor, cache_dir: str | os.PathLike | None = None,
                    tags: dict | None = None) -> FeatureSet:
    """Features of a fixed real image set, from the disk cache when the same key was computed before.

    ``tags`` (e.g. the split's name and fingerprint) join the key and are stored for a reader of the
    cache; the images' own content hash already separates different data.
    """
    tags = tags or {}
    key = cache_key(ex, images, tags)
    path = files.cache_dir(cache_dir or None) / "features" / f"{ex.name}-{key[:24]}.pt"
    if path.exists():
        cached = _read_cached(path, key, len(images))
        if cached is not None:
            return cached
    fs = ex(images)
    content = {"features": fs.features, "logits": fs.logits}
    try:
        files.torch_save(path, {"key": key, "tags": tags, "extractor": ex.key, **content,
                                "sha256": files.content_sha256(content)})
    except OSError as e:
        raise UserError(f"cannot write the feature cache {path.parent} ({e.strerror}); "
                        f"set {CACHE_ENV} to a writable folder") from None
    return fs


def _read_cached(path: Path, key: str, n: int) -> FeatureSet | None:
    """A cache entry's features, or None when the entry is not whole: unreadable, of another key, or its content
    not what was written (flipped bytes inside the tensors load without complaint). It is then recomputed and
    overwritten, never trusted."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        content = {"features": saved["features"], "logits": saved["logits"]}
        if saved["key"] == key and len(saved["features"]) == n and saved["sha256"] == files.content_sha256(content):
            return FeatureSet(saved["features"], saved["logits"])
    except Exception:  # noqa: BLE001 - zip, pickle, EOF, a missing key: a damaged entry
        pass
    log.warning("the feature cache entry %s is damaged or of an older version; recomputing it", path)
    return None
