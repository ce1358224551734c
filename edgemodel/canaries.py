"""Canary tweets: labels recorded when a bundle is made or signed, re-checked before serving.

A canary mismatch means the node would not serve the model the operator tested and signed
(a different runtime, a broken build, a mismatched tokenizer), so the install is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgemodel.inference import Classifier, EmptyTextError

# Plain English tweets with clear polarity for a trained model; for a random test model the
# labels are arbitrary but still deterministic, which is all the check needs.
DEFAULT_CANARIES = (
    "Absolutely love the new update, the app is faster and support was brilliant",
    "Worst customer service ever, waited two hours and nobody answered the phone",
    "The company publishes its quarterly results on Thursday morning",
    "Carmaker recalls 100,000 vehicles over faulty airbags",
    "Great to see the new factory bringing hundreds of jobs to the town",
)

# Below this gap between the two best scores, a canary could flip on other hardware.
NARROW_MARGIN = 0.02


@dataclass(frozen=True)
class Canary:
    text: str
    label: str
    entity: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"text": self.text, "entity": self.entity, "label": self.label}


def compute_canaries(
    classifier: Classifier, texts: Sequence[str]
) -> tuple[list[Canary], list[str]]:
    """Expected labels for ``texts`` and warnings for canaries too close to call.

    A bundle with per-entity heads (``trainer adapt``) also gets the first two texts with
    each such entity, so the node re-checks the heads it will serve, not only the FlatBuffer.
    """
    canaries: list[Canary] = []
    warnings: list[str] = []
    entities = sorted(h.entity for h in classifier.entity_heads.values())
    cases = [(t, None) for t in texts] + [(t, e) for e in entities for t in texts[:2]]
    for text, entity in cases:
        try:
            (prediction,) = classifier.classify([text], [entity])
        except EmptyTextError as exc:
            raise ValueError(f"canary {text!r} is unusable: {exc}") from exc
        canaries.append(Canary(text=text, label=prediction.label, entity=entity))
        top, second = sorted(prediction.scores.values(), reverse=True)[:2]
        if top - second < NARROW_MARGIN:
            warnings.append(
                f"canary {text!r} is a near tie ({top:.3f} vs {second:.3f}); "
                "it may flip on other hardware - consider another text"
            )
    return canaries, warnings


def check_canaries(classifier: Classifier, canaries: Sequence[Canary]) -> list[str]:
    """Mismatches between what ``classifier`` says and what the manifest expects."""
    problems = []
    for canary in canaries:
        try:
            (prediction,) = classifier.classify([canary.text], [canary.entity])
        except EmptyTextError:
            problems.append(f"canary {canary.text!r} cannot be encoded by this model")
            continue
        if prediction.label != canary.label:
            problems.append(
                f"canary {canary.text!r}: model says {prediction.label!r}, "
                f"manifest expects {canary.label!r}"
            )
    return problems
