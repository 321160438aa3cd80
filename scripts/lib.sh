# Shared by scripts/run and scripts/test: idempotent dependency installation.
# shellcheck shell=bash

PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Packages needed to build and run the server.
PARLEY_RUN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libwebsockets-dev libjwt-dev libjsoncpp-dev libcli11-dev uuid-dev libmongoc-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  libsimdjson-dev libopencv-dev libdlib-dev libdlib-data liblapack-dev libblas-dev
  libpocketsphinx-dev libsphinxbase-dev pocketsphinx-en-us libwebrtc-audio-processing-dev
  libcurl4-openssl-dev libsndfile1-dev libebur128-dev flite1-dev libkainjow-mustache-dev
)
# Extra packages for the test suite and benchmarks.
PARLEY_TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev libopus-dev libcpp-httplib-dev
  pocketsphinx-testdata python3-skimage libdlib19.1
  asterisk-core-sounds-en-wav asterisk-core-sounds-en
  chromium
  clang libclang-rt-14-dev
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

# The pinned wire-compatible MongoDB used by the tests (there is no mongod in Debian 12):
# installed from npm with the lock file, then its binary checked against the sha256 its own
# package.json publishes.
JONGODB_DIR="$PARLEY_ROOT/tests/mongo"
JONGODB_PKG="$JONGODB_DIR/node_modules/@jongodb/memory-server-bin-linux-x64-gnu"

ensure_jongodb() {
  ensure_npm
  if [ ! -x "$JONGODB_PKG/bin/jongodb" ]; then
    echo "==> installing the pinned test MongoDB (npm ci)"
    (cd "$JONGODB_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  local want got
  want=$(node -e 'console.log(require(process.argv[1]).jongodb.sha256)' "$JONGODB_PKG/package.json")
  got=$(sha256sum "$JONGODB_PKG/bin/jongodb" | cut -d' ' -f1)
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    echo "jongodb binary sha256 mismatch: package.json says '$want', file is '$got'" >&2
    return 1
  fi
  echo "==> test MongoDB: jongodb 0.1.6 (sha256 verified)"
}

ensure_npm() {
  if ! command -v npm >/dev/null 2>&1; then
    ensure_apt_packages nodejs npm
  fi
}

# The page's third-party code (the MediaPipe face mesh), pinned by web/vendor/package-lock.json
# and served from web/vendor/node_modules/. npm ci checks every file's integrity hash.
ensure_web_vendor() {
  ensure_npm
  local vendor="$PARLEY_ROOT/web/vendor"
  if [ ! -f "$vendor/node_modules/@mediapipe/face_mesh/face_mesh_solution_simd_wasm_bin.wasm" ]; then
    echo "==> installing the page's pinned face mesh (npm ci)"
    (cd "$vendor" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# playwright-core (pinned), which drives Debian's chromium in the page tests; it never
# downloads a browser.
ensure_browser_tests() {
  ensure_npm
  local dir="$PARLEY_ROOT/tests/browser"
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
    echo "==> installing the browser tests' pinned playwright-core (npm ci)"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
}
