#!/usr/bin/env bash
# Installs the Debian 12 packages recpipe needs, and only those missing.
# Idempotent: a second run installs nothing and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  libfaiss-dev libopenblas-dev liblmdb-dev
  libcmocka-dev libjson-c-dev libmicrohttpd-dev libssl-dev
  python3-grpcio python3-grpc-tools
  nghttp2-client libxml2-utils prometheus curl
  clang libfuzzer-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# kubectl renders the Kubernetes manifests (kubectl kustomize). Use the machine's own
# when it has one; otherwise Debian's kubernetes-client provides it.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
# Node.js runs the offline manifest validation and the Node example client.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all ${#PACKAGES[@]} Debian packages present"
else
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
    echo "setup-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages, pinned by each package-lock.json, installed once.
for d in k8s/validate examples/node; do
  if [ -f "$d/package-lock.json" ] && [ ! -d "$d/node_modules" ]; then
    echo "setup-deps: npm ci in $d"
    npm ci --prefix "$d" --no-audit --no-fund --loglevel=error >/dev/null
  fi
done
echo "setup-deps: done"
