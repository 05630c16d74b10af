"""Action recognition (Kinetics-style): the label is one class name; the answer must conclude that class.

```python
from vstar.tasks import get_task
task = get_task("action_recognition", classes=["abseiling", "rock climbing"])
task.verify("The person descends a rope.\\nAnswer: abseiling", {"label": "abseiling"}).passed  # True
task.score("Answer: rock climbing", {"label": "abseiling"})  # {'label': 'rock climbing'}
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vstar.tasks.base import TASKS, Task
from vstar.verify.base import Verdict
from vstar.verify.categorical import CategoricalVerifier
from vstar.verify.composite import combine

# Other names for Kinetics classes that a careful judge accepts. Inflections, plurals, spelling variants, word order
# and compounds written as one word are handled by the verifier itself and need no entry here.
KINETICS_ALIASES: dict[str, list[str]] = {
    "abseiling": ["rappelling", "rapelling"],
    "barbequing": ["grilling", "cooking on a grill"],
    "canoeing or kayaking": ["paddling a canoe", "paddling a kayak"],
    "riding a bike": ["biking", "bike riding"],
    "motorcycling": ["riding a motorcycle", "riding a motorbike"],
    "snowmobiling": ["riding a snowmobile"],
    "situp": ["sit up", "crunches"],
    "push up": ["press up"],
    "pull ups": ["chin ups", "chin up"],
    "using remote controller (not gaming)": ["using remote control", "using a remote"],
    "passing American football (in game)": ["passing football in game", "throwing a pass in a football game"],
    "passing American football (not in game)": ["passing football", "throwing a football"],
    "playing american football": ["playing football game"],
    "shooting goal (soccer)": ["scoring goal soccer", "shooting at goal"],
    "texting": ["sending text message", "typing text message"],
    "jogging": ["light running"],
    "bouncing on trampoline": ["trampolining", "jumping on trampoline"],
    "skipping rope": ["jumping rope", "jump rope"],
    "tai chi": ["taiji"],
    "dribbling basketball": ["bouncing basketball while moving"],
    "blowdrying hair": ["blow drying hair", "drying hair with hair dryer"],
    "getting a haircut": ["having hair cut", "haircut"],
    "carving pumpkin": ["making jack o lantern"],
    "weaving basket": ["basket weaving"],
    "hurling (sport)": ["playing hurling"],
    "curling (sport)": ["playing curling"],
    "air drumming": ["playing air drums"],
    "playing drums": ["drumming"],
    "doing aerobics": ["aerobics"],
    "checking tires": ["checking tyre pressure"],
    "swimming front crawl": ["freestyle swimming", "swimming freestyle"],
    "tossing coin": ["flipping coin"],
    "swimming backstroke": ["backstroke"],
    "swimming breast stroke": ["breaststroke"],
    "swimming butterfly stroke": ["swimming butterfly", "butterfly stroke"],
    "opening wine bottle": ["uncorking wine bottle", "uncorking wine"],
    "petting cat": ["stroking cat"],
    "petting horse": ["stroking horse"],
    "petting animal (not cat)": ["stroking animal"],
    "ironing hair": ["straightening hair"],
    "surfing water": ["surfing", "surfing wave"],
    "punching person (boxing)": ["boxing", "boxers punching"],
    "grooming horse": ["brushing horse"],
    "grooming dog": ["brushing dog"],
}


def _load_classes(classes: Sequence[str] | str | Path | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, Path)):
        lines = Path(classes).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return [str(c) for c in classes]


@TASKS.register("action_recognition")
class ActionRecognitionTask(Task):
    """Which action does the clip show? Label: `{"label": str}`.

    Args:
        classes: the dataset's class vocabulary (a list, or a path to a file with one class per line). With it,
            answers naming a different class that contains the label's words are rejected ("playing bass guitar" for
            "playing guitar"), and `score` returns vocabulary classes.
        threshold: fuzzy score (0-100) above which a misspelt word reads as a class word.
        aliases: extra names per class, merged over the built-in Kinetics table.
        default_aliases: whether to start from the built-in Kinetics alias table.
        prompts: prompt overrides (see `vstar.tasks.base.Prompts`).
    """

    name = "action_recognition"
    label_fields = ("label",)
    class_column = "label"  # a `ClassLabel` there gives the vocabulary
    question_pool = "action_recognition_questions"

    def __init__(
        self,
        classes: Sequence[str] | str | Path | None = None,
        threshold: float = 85.0,
        aliases: Mapping[str, Sequence[str]] | None = None,
        default_aliases: bool = True,
        prompts: Mapping[str, Any] | None = None,
    ):
        super().__init__(prompts=prompts)
        merged: dict[str, list[str]] = {k: list(v) for k, v in KINETICS_ALIASES.items()} if default_aliases else {}
        for key, values in (aliases or {}).items():
            merged.setdefault(key, [])
            merged[key].extend(v for v in values if v not in merged[key])
        self.classes = _load_classes(classes)
        self.verifier = CategoricalVerifier(self.classes, threshold=threshold, aliases=merged)

    def label_text(self, label: Mapping[str, Any]) -> str:
        """The class name, as the hint after "Answer:" in the rationalization prompt."""
        return str(label["label"])

    def verify(self, answer: str, label: Mapping[str, Any]) -> Verdict:
        """Whether the answer's conclusion names the label's class (and only it)."""
        return combine([self.verifier.verify_field(answer, str(label["label"]), "label")])

    def score(self, answer: str, label: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The predicted class (`None` when the answer names none, several, or hedges)."""
        return {"label": self.verifier.predict(answer)}
