"""Synthesis (DESIGN.md section 7): recursive three-level captions and 16-type question-answer pairs from teachers.

```bash
vstar caption --dataset data/clips --split train --teacher Qwen/Qwen2.5-VL-7B-Instruct --output data/captions
vstar qa --captions data/captions --model Qwen/Qwen2.5-7B-Instruct --output data/qa
```
"""

from vstar.synthesize.captions import CAPTION_FEATURES, CaptionConfig, caption  # noqa: E402
from vstar.synthesize.qa import QAConfig, generate_qa  # noqa: E402

__all__ = ["CAPTION_FEATURES", "CaptionConfig", "QAConfig", "caption", "generate_qa"]
