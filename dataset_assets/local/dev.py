"""`make dev`: the Dagster webserver and daemon on the demo's embedded database,
store and instance."""

from __future__ import annotations

import os
import sys

from dataset_assets.local import env as local_env
from dataset_assets.settings import PROJECT_DIR
from dataset_assets.errors import UserError


def main() -> int:
    try:
        env = local_env.prepare()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    host = os.environ.get("DAGSTER_HOST", "127.0.0.1")
    port = os.environ.get("DAGSTER_PORT", "3000")
    print(f"DAGSTER_HOME={env['DAGSTER_HOME']}", file=sys.stderr)
    print(f"open http://{host}:{port}  (Ctrl-C stops webserver and daemon)", file=sys.stderr)
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.chdir(PROJECT_DIR)
    os.execv(dagster, [dagster, "dev", "-w", str(PROJECT_DIR / "workspace.yaml"), "-h", host, "-p", port])
    return 0


if __name__ == "__main__":
    sys.exit(main())
