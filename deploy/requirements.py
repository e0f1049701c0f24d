"""Whether the running Python already has a requirements file's pins (standard library only).

`make package|deploy|destroy|smoke` run this before installing anything, so an existing
environment with the right versions (a full development setup, say) is used as it is.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>\S+)")


def pins(path: Path) -> Iterator[tuple[str, str]]:
    """Every `name==version` in the file and the files it includes with `-r`."""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            yield from pins(path.parent / line.split(None, 1)[1])
            continue
        match = _PIN.match(line)
        if match:
            yield match.group("name"), match.group("version")


def missing(path: Path) -> list[str]:
    """The pins the environment does not satisfy, as `name==version (found ...)` lines."""
    problems = []
    for name, version in pins(path):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} (not installed)")
            continue
        if found != version:
            problems.append(f"{name}=={version} (found {found})")
    return problems


def main(argv: list[str]) -> int:
    """Exit 0 if every pin of the file is installed, 1 (listing what is not) otherwise."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m deploy.requirements REQUIREMENTS_FILE\n")
        return 2
    problems = missing(Path(argv[0]))
    for problem in problems:
        sys.stderr.write(f"needs {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
