"""Create the MLflow users the sentops services log in as, or set their passwords again.

Run as MLflow's admin (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)
after the server is up; run it again after changing a password (docs/security.md):

    sentops-api   the API: reads models and aliases (the server's default_permission = READ)
    sentops-jobs  the trainer and the drift check: creates experiments, runs, versions, and
                  moves the aliases of the models it registered (their creator gets MANAGE)

Each password comes from the variable named below; none is ever printed.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient

USERS = {"sentops-api": "MLFLOW_API_PASSWORD", "sentops-jobs": "MLFLOW_JOBS_PASSWORD"}


def ensure_user(client: AuthServiceClient, username: str, password: str) -> str:
    """Create ``username``, or set its password when it exists; says which."""
    try:
        client.create_user(username, password)
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        return "password set"
    return "created"


def main() -> int:
    missing = [var for var in ("MLFLOW_TRACKING_URI", *USERS.values()) if not os.environ.get(var)]
    if missing:
        sys.stderr.write(f"mlflow-users: set {', '.join(missing)}\n")
        return 2
    client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    for username, var in USERS.items():
        sys.stdout.write(f"mlflow-users: {username}: {ensure_user(client, username, os.environ[var])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
