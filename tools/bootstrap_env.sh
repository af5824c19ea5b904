#!/usr/bin/env bash
# Create (or reuse) the cached virtual environment for this dependency spec and link it as .venv.
# Usage: bootstrap_env.sh PYTHON VENV_CACHE VENV_LINK
set -euo pipefail
python="$1"; cache="$2"; link="$3"
if [ ! -f "$cache/.complete" ]; then
  echo "building environment in $cache (first time for this dependency spec; ~5 min)"
  rm -rf "$cache.partial"
  mkdir -p "$(dirname "$cache")"
  "$python" -m venv "$cache.partial"
  "$cache.partial/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # torch first: pinned to the build this machine kind serves from local disk.
  "$cache.partial/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  # Everything else from the project spec (deps only; the project itself is installed editable below).
  "$cache.partial/bin/python" - <<'PY' > "$cache.partial/requirements.txt"
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))
PY
  "$cache.partial/bin/python" -m pip install -q -r "$cache.partial/requirements.txt"
  # venvs hard-code their path: build in place, so rename is not possible; rebuild at final path.
  rm -rf "$cache"
  mv "$cache.partial" "$cache"
  # fix the shebangs/activation paths that point at the .partial directory
  grep -rl --null "$cache.partial" "$cache/bin" | xargs -0 -r sed -i "s#$cache.partial#$cache#g"
  touch "$cache/.complete"
fi
if [ "$(readlink "$link" 2>/dev/null)" != "$cache" ]; then
  rm -rf "$link"
  ln -s "$cache" "$link"
fi
# The project itself: editable, no deps, so each checkout runs its own code. Skipped when the
# environment already points at this checkout.
here=$(pwd -P)
where=$(cd / && "$link/bin/python" -c "import medseg, os; print(os.path.dirname(os.path.dirname(os.path.realpath(medseg.__file__))))" 2>/dev/null || true)
if [ "$where" != "$here" ]; then
  "$link/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || \
    { echo "editable install of medseg failed" >&2; "$link/bin/python" -m pip install --no-deps --no-build-isolation -e .; exit 1; }
fi
