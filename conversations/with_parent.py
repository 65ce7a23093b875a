"""Run a Python module as a child process that ends when its parent does.

    python with_parent.py PARENT_PID MODULE [ARGS...]

`manage.py serve` starts the local model server this way. A parent killed with SIGKILL cannot
stop its children, and the model server would live on, holding its port: the next `make run`
would find it there. Linux sends the child SIGTERM when its parent dies (PR_SET_PDEATHSIG).
Plain Python, run as a script: no Django, no package import.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        # The parent died before the signal was asked for.
        sys.exit(1)


def main() -> None:
    parent, module = int(sys.argv[1]), sys.argv[2]
    end_with_parent(parent)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
