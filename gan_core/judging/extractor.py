"""The MNIST feature extractors (the judges): small CNN digit classifiers, registered into torch-fidelity.

Two judges, independent of each other (another architecture, another seed, trained on the same train split):
``JUDGES["cnn"]`` (``MnistCNN``, the judge of every metric without a suffix) and ``JUDGES["lenet"]``
(``MnistLeNet``, whose FID/KID/precision/recall carry the suffix ``_lenet``: ``fid1k_lenet``); it re-judges every
final evaluation so that a verdict that depends on one network's features shows itself. A ``Judge`` says
which network, which version, where its weights live and what its metrics are called; every function here
takes one (default: the first).

The first judge's 128-d penultimate layer gives the features for FID, KID and precision/recall; its logits give
the classifier ("inception") score and the mode coverage. Inception-v3 needs weights downloaded at
run time and sees 32x32 grey digits as blurry 299x299 RGB photos; this network was trained on the
digits themselves (``python -m gan_core.train_extractor``) and ships inside the package.

The extractor's name carries the architecture, its version and the weights' SHA-256 prefix, e.g.
``mnist-cnn-v1-1a2b3c4d`` or ``mnist-lenet-v1-5e6f7a8b``: numbers made with different weights can never be mixed up.

Every image, real or generated, enters through ``MnistCNN.forward`` as uint8 and is converted to
float in one place (``preprocess``), so both sides of a metric see exactly the same transformation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch_fidelity import FeatureExtractorBase

from gan_core import files
from gan_core.errors import UnknownName, UserError
from gan_core.training.models import IMAGE_SIZE

VERSION = "v1"  # the first judge's; bump when its architecture or preprocess() changes
FEATURE_DIM = 128
NUM_CLASSES = 10
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / f"mnist_cnn_{VERSION}.pt"
# Part of every feature-cache key; say here, in words, what preprocess() does.
PREPROCESS = "uint8 [N,1|3,32,32] -> grey (channel mean) -> float32 x/127.5-1"
FEATURES = "features"  # torch-fidelity feature names this extractor provides
LOGITS = "logits"


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1 or 3, 32, 32] -> float32 [N, 1, 32, 32] in [-1, 1]: the only uint8 -> float conversion.

    Floats are refused rather than guessed at: a [0, 1] batch read as [0, 255] (or the reverse) would
    give plausible-looking but wrong features.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"the MNIST extractor takes uint8 images (0..255), got {images.dtype}; "
                        "quantise with gan_core.training.sampling.to_uint8 first")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or tuple(images.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images [N, 1 or 3, {IMAGE_SIZE}, {IMAGE_SIZE}], got {list(images.shape)}")
    x = images.float()
    if x.shape[1] == 3:  # grey copied to RGB averages back to exactly the same grey (3a/3 is exact in fp32)
        x = x.mean(dim=1, keepdim=True)
    return x / 127.5 - 1.0


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) on even sizes. Judging (no grad) takes the maximum of the four strided views: the same values
    exactly (a maximum rounds nothing, NaN propagates as in max pooling), without the indices PyTorch's CPU max
    pooling always computes in NCHW. Measured on the 2-core AMD EPYC, one thread, a batch of 100 at MnistCNN's three
    sizes: 27.5, 13.5 and 8.0 ms against 10.4, 2.6 and 0.6; the pooling was half of the judge's time. Training keeps
    max pooling's own gradient (to the first maximum; torch.maximum would split it between ties)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return nn.functional.max_pool2d(x, 2)
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), MaxPool2x2()]


class MnistCNN(nn.Module):
    """uint8 digits -> (features [N, 128], logits [N, 10]). About 93k parameters (~0.4 MB in fp32)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            *_block(1, 32),  # 32 x 16 x 16
            *_block(32, 64),  # 64 x 8 x 8
            *_block(64, FEATURE_DIM),  # 128 x 4 x 4
            nn.AdaptiveAvgPool2d(1),  # 128 x 1 x 1
            nn.Flatten(),  # 128: the feature layer
        )
        self.dropout = nn.Dropout(0.2)  # training only; eval mode (always used for features) skips it
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(preprocess(images))
        return features, self.head(self.dropout(features))


LENET_VERSION = "v1"  # bump when MnistLeNet or preprocess() changes
LENET_FEATURE_DIM = 84  # LeNet-5's F6 width


class MnistLeNet(nn.Module):
    """The second judge: uint8 digits -> (features [N, 84], logits [N, 10]). About 77k parameters.

    Chosen to differ from MnistCNN wherever a judge's taste could come from, while still reaching >= 97% on the
    held-out digits: LeNet-5's 5x5 kernels without padding (MnistCNN: 3x3, padded), average pooling (max),
    no BatchNorm (the features do not depend on batch statistics learnt on the train split), a fully connected
    feature layer over the whole 5x5 map (a global average over 4x4) of another width, 84 (128), and tanh
    there (ReLU): bounded features with no dead units, so the 84 x 84 covariance FID needs stays full rank.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(inplace=True),  # 16 x 28 x 28
            nn.AvgPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, 5), nn.ReLU(inplace=True),  # 32 x 10 x 10
            nn.AvgPool2d(2),  # 32 x 5 x 5
            nn.Flatten(),  # 800
            nn.Linear(32 * 5 * 5, LENET_FEATURE_DIM), nn.Tanh(),  # 84: the feature layer
        )
        self.head = nn.Linear(LENET_FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(preprocess(images))
        return features, self.head(features)


@dataclass(frozen=True)
class Judge:
    """One feature extractor: its network, its version and where its shipped weights are.

    ``key`` is what ``python -m gan_core.train_extractor --judge`` takes; ``suffix`` ends the names of the metrics
    it judges (gan_core.judging.metrics.MetricNames; "" for the first judge, whose names carry none).
    ``classifier``: its logits give the classifier score, mode coverage and digit shares (the first judge's only:
    one set of those is enough, and the second judge is there to re-judge the distances).
    """

    key: str
    arch: str  # in the extractor's name: mnist-<arch>-<version>-<sha8>
    version: str
    network: type[nn.Module]
    suffix: str
    classifier: bool

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"mnist_{self.arch}_{self.version}.pt"


FIRST = Judge("cnn", "cnn", VERSION, MnistCNN, "", classifier=True)
SECOND = Judge("lenet", "lenet", LENET_VERSION, MnistLeNet, "_lenet", classifier=False)
JUDGES = {j.key: j for j in (FIRST, SECOND)}
assert FIRST.weights == WEIGHTS


def judge_for(key: str) -> Judge:
    """The judge named ``key`` ("cnn", "lenet"); one line naming the valid ones otherwise."""
    if key not in JUDGES:
        raise UnknownName("judge", key, JUDGES)
    return JUDGES[key]


# --- weights -------------------------------------------------------------------------------------


def state_bytes(model: nn.Module) -> bytes:
    """The weights file's bytes. Serialised in memory: torch.save into a file embeds the file's name
    in the archive, so the same weights written to two paths would hash differently."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info_path(weights: str | os.PathLike) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(model: nn.Module, weights: str | os.PathLike, info: dict, judge: Judge = FIRST) -> dict:
    """Write the weights and, beside them, a JSON with their SHA-256 (both atomic). Returns the JSON."""
    blob = state_bytes(model)
    info = {**info, "judge": judge.key, "version": judge.version, "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob), "preprocess": PREPROCESS}
    files.atomic_write(weights, lambda p: p.write_bytes(blob))
    files.write_json(info_path(weights), info)
    return info


def load_info(weights: str | os.PathLike = WEIGHTS) -> dict:
    """The JSON written beside the weights (sha256, held-out accuracy, training settings)."""
    path = info_path(weights)
    if not path.exists():
        raise UserError(f"{path} not found; train the extractor with: python -m gan_core.train_extractor")
    return json.loads(path.read_text())


def extractor_name(weights: str | os.PathLike | None = None, judge: Judge = FIRST) -> str:
    """``mnist-cnn-v1-<first 8 hex digits of the weights' SHA-256>`` (``mnist-lenet-v1-...`` for the second judge).
    ``weights``: default the judge's shipped file."""
    return f"mnist-{judge.arch}-{judge.version}-{weights_sha256(weights or judge.weights)[:8]}"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def weights_sha256(weights: str | os.PathLike) -> str:
    """SHA-256 of a weights file, checked against its JSON so a corrupted or swapped file fails loudly."""
    path = Path(weights)
    if not path.exists():
        raise UserError(f"extractor weights {path} not found; train them with: python -m gan_core.train_extractor")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        sha = sha256_file(path)
        recorded = load_info(path).get("sha256")
        if recorded != sha:
            raise UserError(f"extractor weights {path} have SHA-256 {sha[:12]}..., but {info_path(path).name} "
                            f"records {str(recorded)[:12]}...; retrain with: python -m gan_core.train_extractor")
        _SHA_CACHE[key] = sha
    return _SHA_CACHE[key]


def load_model(weights: str | os.PathLike | None = None, device: torch.device | str = "cpu",
               judge: Judge = FIRST) -> nn.Module:
    """The judge's trained network in eval mode, without gradients (``weights``: default its shipped file)."""
    weights = weights or judge.weights
    weights_sha256(weights)
    model = judge.network()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.requires_grad_(False).eval().to(device)


# --- torch-fidelity --------------------------------------------------------------------------------

_WEIGHTS_BY_NAME: dict[str, tuple[Path, Judge]] = {}  # registered name -> weights file and its judge


class FidelityMnistCNN(FeatureExtractorBase):
    """torch-fidelity's view of a judge (MnistCNN or MnistLeNet): features ``"features"`` (FID/KID/PRC) and
    ``"logits"`` (ISC).

    torch-fidelity constructs it as ``cls(name, features_list, **calculate_metrics_kwargs)``; the name
    picks the weights and the network (see ``register``): one class serves both judges.
    Input: uint8 [N, 1 or 3, 32, 32], like every torch-fidelity extractor's uint8 RGB convention but also taking
    grey directly.
    """

    def __init__(self, name: str, features_list, **kwargs):
        super().__init__(name, features_list)
        if name not in _WEIGHTS_BY_NAME:
            raise ValueError(f"feature extractor {name!r} was not registered through "
                             "gan_core.judging.extractor.register")
        weights, judge = _WEIGHTS_BY_NAME[name]
        self.net = load_model(weights, judge=judge)

    @staticmethod
    def get_provided_features_list():
        return FEATURES, LOGITS

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": LOGITS, "fid": FEATURES, "kid": FEATURES, "prc": FEATURES}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)

    def forward(self, images: torch.Tensor):
        features, logits = self.net(images)
        out = {FEATURES: features, LOGITS: logits}
        return tuple(out[name] for name in self.features_list)


def register(weights: str | os.PathLike | None = None, judge: Judge = FIRST) -> str:
    """Register the judge with these weights (default: its shipped file) in torch-fidelity (once); its name.

    Safe to call any number of times: torch-fidelity raises on a second registration of a name.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    weights = weights or judge.weights
    name = extractor_name(weights, judge)
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, FidelityMnistCNN)
    _WEIGHTS_BY_NAME[name] = Path(weights), judge
    return name
