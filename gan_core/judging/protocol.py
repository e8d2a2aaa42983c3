"""The protocol a score was measured under: two scores are comparable only when their protocols are equal.

Every result of ``Reference.score`` (a trial's metrics.json and Optuna attrs, the floor, ``score()`` on a
user's samples) carries ``result["protocol"]``. What the *samples* were (a folder, a callable, how their
pixels were converted) is not part of it: it is what is being judged, not how.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gan_core.errors import UserError
from gan_core.training.run_folder import PROTOCOL as PROTOCOL_KEY  # the result's key, a field of its log lines


@dataclass(frozen=True)
class Protocol:
    judge: str  # the feature extractor's name, with its weights' short hash: mnist-cnn-v1-81967625
    weights_sha256: str  # the judge's full weights hash
    heldout: str  # the real side: data source and held-out split fingerprint, "embedded b8b2c6c961a18709"
    n_generated: int  # sample counts of both sides (FID and KID are biased differently at each count)
    n_real: int
    preprocessing: str  # what the judge sees and does to it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, result: dict) -> Protocol:
        """The protocol a result carries; one line if it carries none (scored before protocols were recorded)."""
        saved = (result or {}).get(PROTOCOL_KEY)
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(saved, dict) or set(saved) != set(names):
            raise UserError("this result carries no protocol (scored by an older version); score it again")
        return cls(**saved)

    def differences(self, other: Protocol) -> list[str]:
        """'n_generated 1000 vs 500' for every part that differs; empty when comparable."""
        return [f"{f.name} {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


class ProtocolMismatch(UserError):
    """Two results measured under different protocols were asked to be compared."""


def check_comparable(a: dict, b: dict) -> Protocol:
    """The shared protocol of two results, or ProtocolMismatch naming every part that differs."""
    pa, pb = Protocol.of(a), Protocol.of(b)
    if diff := pa.differences(pb):
        raise ProtocolMismatch(f"not comparable: their protocols differ in {'; '.join(diff)}")
    return pa
