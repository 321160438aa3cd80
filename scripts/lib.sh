# Shared by scripts/run and scripts/test: idempotent dependency installation.
# shellcheck shell=bash

PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Packages needed to build and run the server.
PARLEY_RUN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libwebsockets-dev libjwt-dev libjsoncpp-dev libcli11-dev uuid-dev
)
# Extra packages for the test suite and benchmarks.
PARLEY_TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev libcurl4-openssl-dev
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages that are not installed yet (no network use when all are).
ensure_apt_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "==> installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

build_jobs() {
  nproc 2>/dev/null || echo 2
}
