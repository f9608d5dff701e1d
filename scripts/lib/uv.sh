# uv (PyPI), pinned, in a throwaway virtualenv: the resolver behind scripts/lock and
# scripts/test-deps. Sourced, not run.
UV_VERSION=0.13.9

build_requires() {
  # pyproject's [build-system] requires, one per line: bootstrap installs galley without build
  # isolation, so the build backend comes from the lock too.
  python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
}

uv_compile() {
  # uv_compile OUTPUT [uv pip compile options]: pyproject's dependencies, its test and lab
  # extras and the build backend, hash-locked for CPython 3.11 on x86_64 Linux.
  local output=$1
  shift
  local tool
  tool=$(mktemp -d)
  trap "rm -rf '$tool'" RETURN
  python3 -m venv "$tool/venv"
  "$tool/venv/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
  build_requires | "$tool/venv/bin/uv" pip compile --quiet --generate-hashes \
    --extra test --extra lab --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
    --custom-compile-command "bash scripts/lock" --output-file "$output" \
    pyproject.toml - "$@"
}
