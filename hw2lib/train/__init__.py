"""Training: one recipe written once (`recipes`), the loop (`engine.fit`: optimizer and LR table,
mixing, EMA, checkpoints, divergence checks, progress), the CPU precision probe, one run of a recipe
with its identity (`experiment`) and the executor of many runs (local or Ray).

It may use `hw2lib.core`, `hw2lib.data` and `hw2lib.nets`; it knows nothing of the study's tasks,
notebooks or reports."""
