"""`evaluate` metric: action quality assessment (FineDiving) - Spearman's rho, R-l2, errors, sequence accuracy.

```python
import evaluate
metric = evaluate.load("path/to/vstar_action_quality")  # or vstar.evaluate.metrics.load_metric(...)
metric.compute(predictions=[80.1, None, 55.0], references=[82.0, 60.5, 50.2])
metric.compute(
    predictions=[{"dive_score": 65.0, "difficulty": 3.2, "sub_actions": ["Inward", "3.5 Soms.Tuck", "Entry"]}],
    references=[{"dive_score": 65.6, "difficulty": 3.2, "sub_actions": ["Inward", "3.5 Soms.Tuck", "Entry"]}],
)
```
"""

import datasets
import evaluate

from vstar.evaluate.metrics import quality_metrics

_CITATION = """\
@inproceedings{xu2022finediving,
  title={FineDiving: A Fine-grained Dataset for Procedure-aware Action Quality Assessment},
  author={Xu, Jinglin and Rao, Yongming and Yu, Xumin and Chen, Guangyi and Zhou, Jie and Lu, Jiwen},
  booktitle={CVPR},
  year={2022}
}
"""

_DESCRIPTION = """\
Action quality assessment metrics: Spearman's rank correlation between predicted and true scores (average ranks for
ties), the relative L2 distance R-l2 = 100/K * sum_k ((p_k - t_k) / (max - min))^2 with max/min of the true scores,
mean absolute errors of score and difficulty, exact sub-action sequence accuracy and parse rates. Unparsed
predictions (None) are left out of rho, R-l2 and the errors and counted in the parse rates;
`spearman_with_unparsed_as_mean` imputes them with the mean predicted score so missing answers cost rank correlation.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: either predicted scores (`float` or `None`), or dicts with `dive_score`, `difficulty` (floats or
        `None`) and `sub_actions` (`list` of `str` or `None`).
    references: true scores, or dicts of the same form as the predictions.
    score_range (`tuple` of two floats, optional): (min, max) of the score scale for R-l2.
Returns:
    spearman, spearman_with_unparsed_as_mean, relative_l2, score_mae, difficulty_mae, sequence_accuracy,
    score_parse_rate, difficulty_parse_rate, sequence_parse_rate, parse_rate, num_examples, num_scored.
Examples:
    >>> metric = evaluate.load("vstar_action_quality")  # doctest: +SKIP
    >>> metric.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 3.0, 2.0])["spearman"]  # doctest: +SKIP
    0.5
"""

_FIELDS = {
    "dive_score": datasets.Value("float64"),
    "difficulty": datasets.Value("float64"),
    "sub_actions": datasets.Sequence(datasets.Value("string")),
}


def _clean(example):
    if not isinstance(example, dict):
        return example
    # A missing sequence is stored as an empty list (Arrow's string lists reject None); both read as unparsed.
    return {
        "dive_score": example.get("dive_score"),
        "difficulty": example.get("difficulty"),
        "sub_actions": [str(s) for s in example.get("sub_actions") or []],
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VstarActionQuality(evaluate.Metric):
    """Action quality metrics (see `vstar.evaluate.metrics.quality_metrics`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
                datasets.Features({"predictions": _FIELDS, "references": _FIELDS}),
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (unparsed predictions may be `None`)."""
        predictions = None if predictions is None else [_clean(p) for p in predictions]
        references = None if references is None else [_clean(r) for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference (an unparsed prediction may be `None`)."""
        return super().add(prediction=_clean(prediction), reference=_clean(reference), **kwargs)

    def _compute(self, predictions, references, score_range=None):
        if not predictions or not isinstance(references[0], dict):
            return quality_metrics(predictions, references, score_range=score_range)
        return quality_metrics(
            [p["dive_score"] for p in predictions],
            [r["dive_score"] for r in references],
            [p["difficulty"] for p in predictions],
            [r["difficulty"] for r in references],
            [p["sub_actions"] or None for p in predictions],
            [r["sub_actions"] or None for r in references],
            score_range=score_range,
        )
