"""Fitting models and judging them: the training loop (steps, train, resume, history), test
evaluation and reports (evaluate), one run end to end (runs), cross-validation (crossval),
model comparisons (compare) and the demo (demo)."""
