"""Jinja templates of the dataset and model cards (shipped inside the package as `vstar.dataset_cards`)."""
