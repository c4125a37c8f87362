"""hw2lib — data, models, losses, training engine, metrics, visualization and the report runner
of the HW2 EuroSAT study. Importing it does nothing but define names; submodules are imported lazily
by whoever needs them."""

__version__ = "0.1.0"
