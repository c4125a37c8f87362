"""The kernel a notebook runs in: a kernel manager whose process writes its own log (stderr) to
a file instead of the terminal.

The kernel's stderr carries its start-up notices and, when a run is stopped (Ctrl-C, SIGTERM)
while a cell executes, a ZMQError traceback from a reply sent on a socket already closed: noise
on the console, kept in `executed/<notebook>.kernel.log` for whoever needs it. The cells' own
output still streams to the terminal (papermill's stdout/stderr files).
"""

from __future__ import annotations

from pathlib import Path


def logged_kernel_manager(log_path):
    """An AsyncKernelManager class (papermill's `kernel_manager_class`) whose kernel process
    appends its stderr to `log_path`."""
    from jupyter_client.manager import AsyncKernelManager

    log_path = Path(log_path)

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                kw["stderr"] = log
                return await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggedKernelManager
