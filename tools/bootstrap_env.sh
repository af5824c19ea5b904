#!/usr/bin/env bash
# Build (or reuse) the heavy third-party environment, then give this checkout its own light .venv
# layered on it.
#
# Usage: bootstrap_env.sh PYTHON CACHE_VENV CHECKOUT_VENV
#
#   CACHE_VENV     shared by every checkout with the same dependency spec (pyproject.toml ranges +
#                  constraints.txt pins + Python version, hashed by tools/spec_hash.py); holds
#                  torch, monai, ... but NOT medseg. Built once (~5 min), then reused (CI clones).
#   CHECKOUT_VENV  (.venv, not in git) a venv without packages of its own: a .pth file adds the
#                  cache's site-packages, another puts this checkout on sys.path (so each checkout
#                  runs its own code and two checkouts never re-point each other), and bin/ has the
#                  cache's console scripts re-targeted at this venv's interpreter (+ `medseg`).
set -euo pipefail
python="$1"; cache="$2"; venv="$3"
here=$(pwd -P)
if [ ! -f "$cache/.complete" ]; then
  echo "building environment in $cache (first time for this dependency spec; ~5 min)"
  rm -rf "$cache.partial"
  mkdir -p "$(dirname "$cache")"
  "$python" -m venv "$cache.partial"
  "$cache.partial/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # the project's requirements (runtime + dev), pinned by constraints.txt to what this machine
  # kind serves (torch from local disk)
  "$cache.partial/bin/python" - <<'PY' > "$cache.partial/requirements.txt"
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))
PY
  "$cache.partial/bin/python" -m pip install -q -c constraints.txt "torch" "torchvision"
  "$cache.partial/bin/python" -m pip install -q -c constraints.txt -r "$cache.partial/requirements.txt"
  rm -rf "$cache"
  mv "$cache.partial" "$cache"
  # venvs hard-code their path: fix shebangs/activation scripts that name the .partial folder
  grep -rl --null "$cache.partial" "$cache/bin" | xargs -0 -r sed -i "s#$cache.partial#$cache#g"
  touch "$cache/.complete"
fi
site=$("$cache/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -L "$venv" ]; then rm -f "$venv"; fi  # the old layout: a link into the cache
if [ "$(cat "$venv/.layer" 2>/dev/null || true)" != "$cache $here" ]; then
  rm -rf "$venv"
  "$python" -m venv --without-pip "$venv"
  vsite=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  printf 'import site; site.addsitedir(%s)\n' "'$site'" > "$vsite/_medseg_env.pth"
  printf '%s\n' "$here" > "$vsite/_medseg_checkout.pth"
  for script in "$cache"/bin/*; do
    name=$(basename "$script")
    case "$name" in python*|activate*|Activate*|pip*) continue ;; esac
    [ -e "$venv/bin/$name" ] && continue
    if head -c 2 "$script" | grep -q '#!' && head -n 1 "$script" | grep -q "$cache/bin/python"; then
      sed "1s|.*|#!$here/$venv/bin/python|" "$script" > "$venv/bin/$name"
      chmod +x "$venv/bin/$name"
    else
      ln -s "$script" "$venv/bin/$name"
    fi
  done
  printf '#!%s\nimport sys\nfrom medseg.cli import main\nsys.exit(main())\n' "$here/$venv/bin/python" \
    > "$venv/bin/medseg"
  chmod +x "$venv/bin/medseg"
  echo "$cache $here" > "$venv/.layer"
fi
