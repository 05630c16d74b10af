"""`evaluate` metric: multiple-choice QA accuracy with robust option parsing (TempCompass-style A-D/E options).

```python
import evaluate
metric = evaluate.load("path/to/vstar_multiple_choice")  # or vstar.evaluate.metrics.load_metric(...)
metric.compute(
    predictions=["The clip plays in reverse.\\nAnswer: (B)"],
    references=["B"],
    options=[["The clip plays forward", "The clip plays in reverse"]],
)
```
"""

import datasets
import evaluate

from vstar.evaluate.metrics import multiple_choice_metrics

_CITATION = """\
@article{liu2024tempcompass,
  title={TempCompass: Do Video LLMs Really Understand Videos?},
  author={Liu, Yuanxin and Li, Shicheng and Liu, Yi and Wang, Yuxiang and Ren, Shuhuai and Li, Lei and Chen, Sishuo
    and Sun, Xu and Hou, Lu},
  journal={arXiv preprint arXiv:2403.00476},
  year={2024}
}
"""

_DESCRIPTION = """\
Multiple-choice accuracy for free-form answers. The chosen option is read from the answer's conclusion (the final
answer line, else the last conclusive sentence): a letter ("B", "(B)", "B.", "Answer: B"), a letter with its text
("B) ...") or the option text alone. Negated mentions ("not A") are skipped; an answer naming two options, or none,
counts as wrong and as unparsed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the model's answers (`None` counts as unparsed).
    references (`list` of `str`): the correct option of each question: its letter ("B", "(B)") or its text.
    options (`list` of `list` of `str`): the option texts of each question, in order (lettered A, B, C, ...).
Returns:
    accuracy, unparsed_rate, parse_rate, choice_distribution, num_examples, choices (the parsed letter per answer).
Examples:
    >>> metric = evaluate.load("vstar_multiple_choice")  # doctest: +SKIP
    >>> result = metric.compute(predictions=["(A)"], references=["A"], options=[["left", "right"]])  # doctest: +SKIP
    >>> result["accuracy"]  # doctest: +SKIP
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VstarMultipleChoice(evaluate.Metric):
    """Multiple-choice accuracy (see `vstar.evaluate.metrics.multiple_choice_metrics`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "options": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (unparsed predictions may be `None`)."""
        # Arrow string columns reject None: a missing answer is stored as "" (unparsed either way).
        if predictions is not None:
            predictions = ["" if p is None else str(p) for p in predictions]
        if references is not None:
            references = [str(r) for r in references]
        if kwargs.get("options") is not None:
            kwargs["options"] = [[str(o) for o in opts] for opts in kwargs["options"]]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference (an unparsed prediction may be `None`)."""
        prediction = "" if prediction is None else str(prediction)
        return super().add(prediction=prediction, reference=None if reference is None else str(reference), **kwargs)

    def _compute(self, predictions, references, options):
        return multiple_choice_metrics(predictions, options, references)
