"""`evaluate` metric: action recognition accuracy, per-class accuracy, confusions and the unparsed share.

```python
import evaluate
metric = evaluate.load("path/to/vstar_action_recognition")  # or vstar.evaluate.metrics.load_metric(...)
metric.compute(predictions=["abseiling", None], references=["abseiling", "rock climbing"])
```
"""

import datasets
import evaluate

from vstar.evaluate.metrics import classification_metrics

_CITATION = """\
@article{zohar2024videostar,
  title={Video-STaR: Self-Training Enables Video Instruction Tuning with Any Supervision},
  author={Zohar, Orr and Wang, Xiaohan and Bitton, Yonatan and Szpektor, Idan and Yeung-Levy, Serena},
  journal={arXiv preprint arXiv:2407.06189},
  year={2024}
}
"""

_DESCRIPTION = """\
Action recognition metrics for answers whose conclusion names one class: accuracy (exact match, or the mean of the
verifier's verdicts when `correct` is given), balanced accuracy, per-class accuracy, the most frequent confusions
(label -> another named class) and the share of answers with no parseable conclusion.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str` or `None`): the predicted class of each answer; `None` or "" when unparseable.
    references (`list` of `str`): the true classes.
    correct (`list` of `bool`, optional): the verifier's verdict per answer; accuracy is its mean when given.
    top_confusions (`int`, optional): how many confusions to report (default 10).
Returns:
    accuracy, balanced_accuracy, per_class_accuracy, confusions, unparsed_rate, num_examples.
Examples:
    >>> metric = evaluate.load("vstar_action_recognition")  # doctest: +SKIP
    >>> metric.compute(predictions=["a", "b", None], references=["a", "a", "b"])["accuracy"]  # doctest: +SKIP
    0.3333333333333333
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VstarActionRecognition(evaluate.Metric):
    """Action recognition metrics (see `vstar.evaluate.metrics.classification_metrics`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (unparsed predictions may be `None`)."""
        # Arrow string columns reject None: an unparsed prediction is stored as "".
        if predictions is not None:
            predictions = ["" if p is None else str(p) for p in predictions]
        if references is not None:
            references = [str(r) for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference (an unparsed prediction may be `None`)."""
        prediction = "" if prediction is None else str(prediction)
        return super().add(prediction=prediction, reference=None if reference is None else str(reference), **kwargs)

    def _compute(self, predictions, references, correct=None, top_confusions=10):
        return classification_metrics(predictions, references, correct=correct, top_confusions=top_confusions)
