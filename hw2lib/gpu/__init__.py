"""GPU readiness: `hw2 doctor`, one call that measures the GPU path (environment, CUDA tests,
benchmarks, a Track-2 training, the timed plan) and writes its page.

It may use every layer below it, the report's plan included, and the checkout's bench/ folder. (An
NVIDIA device torch cannot use is found by `hw2lib.core.gpu_check`, which the report runner needs
too.)"""
