"""The bottom layer: facts and helpers every other layer needs — constants, atomic file writes and
JSON (`io`), where files go (`paths`), the machine (`machine`, `gpu_check`) and the device's
per-process set-up (`runtime`: seeds, devices, RNG states).

It imports nothing else of hw2lib. Importing the package imports nothing (only `runtime` needs
torch, and only when it is imported)."""
