"""`vstar view`: a local Gradio app that shows a run's answers beside their clips."""
