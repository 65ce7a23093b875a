"""Run a Python module, or any command, as a child process that ends when its parent does.

    python with_parent.py PARENT_PID MODULE [ARGS...]
    python with_parent.py PARENT_PID --run COMMAND [ARGS...]

`manage.py serve` starts the local model server this way. A parent killed with SIGKILL cannot
stop its children, and the model server would live on, holding its port: the next `make run`
would find it there. Linux sends the child SIGTERM when its parent dies (PR_SET_PDEATHSIG).
Plain Python, run as a script: no Django, no package import.

With `--run` (an MCP server over stdio), COMMAND runs as this process's child, on the same
stdin, stdout and stderr, and ends with it too; when it exits, its exit code is written to
stderr, where whoever started it keeps the tail, and is this process's own.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    ask_for_parent_death_signal()
    if os.getppid() != parent:
        # The parent died before the signal was asked for.
        sys.exit(1)


def ask_for_parent_death_signal() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_command(command: list[str]) -> int:
    try:
        child = subprocess.Popen(command, preexec_fn=ask_for_parent_death_signal)
    except OSError as error:
        print(f"{command[0]}: {error.strerror or error}", file=sys.stderr)
        print("[exit code 127]", file=sys.stderr, flush=True)
        return 127

    def forward(number: int, frame: object) -> None:
        child.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, forward)
    code = child.wait()
    print(f"[exit code {code}]", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


def main() -> None:
    parent, module = int(sys.argv[1]), sys.argv[2]
    end_with_parent(parent)
    if module == "--run":
        sys.exit(run_command(sys.argv[3:]))
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
