"""Print a short hash of the dependency spec (keys the cached environment).

The spec is pyproject.toml's dependency ranges, the exact pins in constraints.txt and the Python
version: change any of them and the next `make env` builds a new cached environment.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
with pyproject.open("rb") as fh:
    project = tomllib.load(fh)["project"]
constraints = pyproject.with_name("constraints.txt")
spec = {
    "python": sys.version_info[:2],
    "dependencies": sorted(project.get("dependencies", [])),
    "optional": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
    "constraints": sorted(
        line.strip()
        for line in constraints.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ),
}
print(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16])
