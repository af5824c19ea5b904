"""Print a short hash of the dependency spec in pyproject.toml (keys the cached environment)."""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]
spec = {
    "python": sys.version_info[:2],
    "dependencies": sorted(project.get("dependencies", [])),
    "optional": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
}
print(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16])
