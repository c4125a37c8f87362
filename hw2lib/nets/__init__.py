"""Networks and what is computed from their outputs: the model registry (`models`), losses,
metrics, forward hooks and the features, t-SNE and feature visualization built on them.

It may use `hw2lib.core` (and the data layer's tensors as inputs); it knows nothing of training
runs, notebooks or reports."""
