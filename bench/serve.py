"""`manage.py serve` as `make run` runs it, counting the database writes (for the benchmark).

    DJANGO_SETTINGS_MODULE=chatsite.settings .venv/bin/python bench/serve.py --port 8100 \\
        --writes writes.json

Every INSERT, UPDATE and DELETE statement is counted; on SIGUSR1 and at exit the count is written
to `--writes`, so the benchmark can tell how many writes an answer costs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django

WRITES = ("INSERT", "UPDATE", "DELETE")
count = {"writes": 0}


def counted(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    if sql.lstrip()[:6].upper() in WRITES:
        count["writes"] += 1
    return execute(sql, params, many, context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writes", type=Path, required=True)
    options = parser.parse_args()
    django.setup()
    from django.db.backends.signals import connection_created

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(counted)

    connection_created.connect(install, weak=False)

    def dump(*_: object) -> None:
        options.writes.write_text(json.dumps(count))

    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)
    from django.core.management import call_command

    call_command("serve", "--host", "127.0.0.1", "--port", str(options.port))


if __name__ == "__main__":
    main()
