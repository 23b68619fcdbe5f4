"""Write constraints.txt: the exact versions of sentiment-ops' runtime dependency closure
(``[postgres]`` and ``[server]`` extras included, ``[dev]`` left out) as installed in the environment that CI
tests with. The Dockerfile installs its dependency layer with ``-c constraints.txt``, so the
image holds the versions the tests passed on, not whatever the index serves that day.

    .venv/bin/python scripts/constraints.py > constraints.txt     # after make setup

torch is left out: its build (CPU or a CUDA one) is chosen by the Dockerfile's TORCH_VERSION
and TORCH_INDEX build arguments."""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

ROOT_PACKAGE = "sentiment-ops"
EXTRAS = {"postgres", "server"}
LEFT_OUT = {"torch", "sentiment-ops"}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """name → version of every installed package the root needs at run time."""
    found: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(ROOT_PACKAGE, set(EXTRAS))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (_canon(name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional dependency for another platform
        found[_canon(dist.metadata["Name"])] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            env = {"extra": ""}
            wanted = req.marker is None or req.marker.evaluate(env)
            wanted = wanted or any(req.marker.evaluate({"extra": e}) for e in extras)
            if wanted:
                todo.append((req.name, set(req.extras)))
    return found


def main() -> None:
    pins = closure()
    sys.stdout.write(
        "# The versions CI tested with: the runtime dependency closure of sentiment-ops[postgres,server]\n"
        "# (torch left out: the Dockerfile's TORCH_VERSION / TORCH_INDEX choose its build).\n"
        "# Regenerate after changing dependencies: .venv/bin/python scripts/constraints.py > constraints.txt\n"
    )
    for name in sorted(pins):
        if name not in LEFT_OUT:
            sys.stdout.write(f"{name}=={pins[name].split('+')[0]}\n")


if __name__ == "__main__":
    main()
