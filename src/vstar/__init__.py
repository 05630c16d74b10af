"""vstar: Video-STaR on the Hugging Face stack.

Turns labeled video datasets into verified video instruction data and better video language models:
a model answers label-bearing questions step by step, answers whose conclusion matches the label are kept,
failures are retried with the label as a hint, and a LoRA finetune on the kept data gives the next model.
"""

__version__ = "0.1.0"
