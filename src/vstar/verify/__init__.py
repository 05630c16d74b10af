"""Label verifiers: does an answer's conclusion match the label? Every verdict carries per-field reasons.

```python
from vstar.verify import CategoricalVerifier, NumericVerifier, extract_conclusion
CategoricalVerifier(["abseiling", "rock climbing"]).verify_field("Answer: abseiling", "abseiling").passed  # True
```
"""

from vstar.verify.answer import extract_conclusion, find_conclusion, find_numbers, normalize_text, parse_number
from vstar.verify.base import FieldVerdict, Verdict
from vstar.verify.categorical import CategoricalVerifier
from vstar.verify.choice import ChoiceVerifier, parse_choice
from vstar.verify.composite import CompositeVerifier, combine
from vstar.verify.numeric import NumericVerifier
from vstar.verify.sequence import SequenceVerifier, StepSequenceVerifier

__all__ = [
    "CategoricalVerifier",
    "ChoiceVerifier",
    "CompositeVerifier",
    "FieldVerdict",
    "NumericVerifier",
    "SequenceVerifier",
    "StepSequenceVerifier",
    "Verdict",
    "combine",
    "extract_conclusion",
    "find_conclusion",
    "find_numbers",
    "normalize_text",
    "parse_choice",
    "parse_number",
]
