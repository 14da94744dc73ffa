#!/usr/bin/env bash
# Build the cezsar edge image with podman and run it against a stream and mosquitto (docs/deployment.md,
# "Run as a service"). Root only (debootstrap, rootful podman). Needs: podman, runc, debootstrap, and this
# checkout's ./.venv with torch (to export the demo model into a deploy folder on the host).
#
#   bash scripts/site_image.sh            # base image (if missing), build, check; a JSON report at the end
#   bash scripts/site_image.sh build      # base image (if missing) and build only
#   bash scripts/site_image.sh check      # check an image built before
#
# The check runs the image against a synthetic stream and mosquitto (scripts/site_image_check.py), then
# packaging/systemd/cezsar.service under a real systemd in a container (packaging/systemd/Containerfile.unit-check).
#
# Environment:
#   CEZSAR_BASE    image to build FROM [localhost/cezsar-base:bookworm, made here with debootstrap from the
#                  Debian mirror apt uses, when missing]; e.g. docker.io/library/debian:bookworm-slim
#   CEZSAR_IMAGE   tag of the edge image [localhost/cezsar-edge:dev]
#   CEZSAR_MOSQUITTO_IMAGE  mosquitto image for the check [localhost/cezsar-mosquitto:dev, built here]
#   CEZSAR_REPORT  where the JSON report goes [build/site_image.json]
#   CEZSAR_MIRROR  Debian mirror for debootstrap [the first bookworm mirror in apt's sources]
#   CEZSAR_NO_CACHE=1  build every layer anew (podman build --no-cache), for timing a first build
#
# pip inside the build gets this machine's pip configuration (`pip config list`, environment included) and
# CA bundle as build secrets (mounted for the one RUN that installs, never written into a layer); entries
# that name local paths are left out (see pip_secrets).
#
# Podman settings that work on hosts with hybrid cgroups (v1 controllers): the runc runtime (crun fails
# there), --isolation chroot for builds, explicit ulimits. Override with CEZSAR_PODMAN_RUNTIME (runc).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=${1:-all}
BASE=${CEZSAR_BASE:-localhost/cezsar-base:bookworm}
IMAGE=${CEZSAR_IMAGE:-localhost/cezsar-edge:dev}
MOSQ=${CEZSAR_MOSQUITTO_IMAGE:-localhost/cezsar-mosquitto:dev}
REPORT=${CEZSAR_REPORT:-build/site_image.json}
RUNTIME=${CEZSAR_PODMAN_RUNTIME:-runc}
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
PODMAN=(podman --runtime "$RUNTIME")

case "$MODE" in all | build | check) ;; *) echo "usage: $0 [all|build|check]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "site_image.sh: run as root (debootstrap and rootful podman)" >&2; exit 2; }
for tool in podman "$RUNTIME"; do
  command -v "$tool" >/dev/null || { echo "site_image.sh: $tool missing (apt-get install podman runc debootstrap)" >&2; exit 2; }
done
mkdir -p "$(dirname "$REPORT")"
WORK=$(mktemp -d /tmp/cezsar-site-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

base_image() {
  if "${PODMAN[@]}" image exists "$BASE"; then
    echo "base: $BASE (present)"
    BASE_S=0
    return
  fi
  if [ "$BASE" != localhost/cezsar-base:bookworm ]; then
    echo "base: pulling $BASE"
    "${PODMAN[@]}" pull "$BASE"
    BASE_S=0
    return
  fi
  command -v debootstrap >/dev/null || { echo "site_image.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 2; }
  local mirror=${CEZSAR_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk '$2 == "bookworm" {print $1; exit}')
  fi
  mirror=${mirror:-http://deb.debian.org/debian/}
  echo "base: debootstrap --variant=minbase bookworm from $mirror"
  local t0
  t0=$(now)
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # debootstrap leaves its downloaded packages and apt's caches behind: not part of an image
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import --message "debootstrap minbase bookworm" - "$BASE" >/dev/null 2>&1
  rm -rf "$WORK/rootfs"
  BASE_S=$(elapsed "$t0")
  echo "base: $BASE in ${BASE_S} s"
}

# This machine's pip configuration as one file (secret pipconf) and its CA bundle (secret ca). Entries that name
# a local file or folder (find-links, file:// indexes, constraint files) are left out: the build cannot see
# this machine's disk, and a bind mount would leave its mount point in the image. The cert entry becomes the
# ca secret.
pip_secrets() {
  local py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  mkdir -p "$WORK/secrets"
  "$py" - "$WORK/secrets" <<'PY'
import configparser, os, re, subprocess, sys
from pathlib import Path

out = Path(sys.argv[1])
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
conf = configparser.ConfigParser(interpolation=None)
ca, dropped = None, []


def local(word: str) -> bool:
    return word.startswith("file:") or word.startswith("/") or word.startswith("~") or word.startswith(".")


for line in listing.splitlines():
    m = re.match(r"^([^.=]+)\.([^=]+)='(.*)'$", line)
    if not m:
        continue
    section, key, value = m.groups()
    section = "global" if section == ":env:" else section
    if key == "cert":
        ca = ca or value
        continue
    kept = [w for w in value.split() if not local(w)]
    if len(kept) != len(value.split()):
        dropped.append(f"{key} ({' '.join(w for w in value.split() if local(w))})")
        if not kept or key in ("constraint", "requirement", "find-links"):
            continue
        value = " ".join(kept)
    if not conf.has_section(section):
        conf.add_section(section)
    conf.set(section, key, value)
ca = ca or os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
ca = ca or "/etc/ssl/certs/ca-certificates.crt"
with open(out / "pipconf", "w") as f:
    conf.write(f)
(out / "ca").write_bytes(Path(ca).read_bytes() if os.path.isfile(ca) else b"")
keys = sorted({k for s in conf.sections() for k in conf[s]})
print(f"pip: build secrets: pip configuration ({', '.join(keys) or 'empty'}), CA bundle {ca}", file=sys.stderr)
if dropped:
    print(f"pip: left out (local paths): {'; '.join(dict.fromkeys(dropped))}", file=sys.stderr)
PY
}

build() {
  base_image
  pip_secrets
  local common=(--isolation chroot --format docker "${ULIMITS[@]}" --build-arg "BASE=$BASE")
  [ "${CEZSAR_NO_CACHE:-0}" = 1 ] && common+=(--no-cache)
  echo "build: $IMAGE (podman build, Containerfile.edge)"
  local t0
  t0=$(now)
  "${PODMAN[@]}" build "${common[@]}" \
    --secret "id=pipconf,src=$WORK/secrets/pipconf" --secret "id=ca,src=$WORK/secrets/ca" \
    -f packaging/container/Containerfile.edge -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; exit 1; }
  BUILD_S=$(elapsed "$t0")
  echo "build: $IMAGE in ${BUILD_S} s"
  t0=$(now)
  "${PODMAN[@]}" build "${common[@]}" -f packaging/container/Containerfile.mosquitto -t "$MOSQ" \
    packaging/container >"$WORK/build-mosquitto.log" 2>&1 || { tail -40 "$WORK/build-mosquitto.log" >&2; exit 1; }
  MOSQ_S=$(elapsed "$t0")
  echo "build: $MOSQ in ${MOSQ_S} s"
}

BASE_S=null BUILD_S=null MOSQ_S=null
if [ "$MODE" != check ]; then
  build
fi
if [ "$MODE" = build ]; then
  exit 0
fi
[ -x .venv/bin/python ] || { echo "site_image.sh: no ./.venv (bash scripts/install.sh)" >&2; exit 2; }
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python scripts/site_image_check.py \
  --image "$IMAGE" --mosquitto-image "$MOSQ" --base "$BASE" --runtime "$RUNTIME" --report "$REPORT" \
  --timing "base_s=$BASE_S" --timing "build_s=$BUILD_S" --timing "mosquitto_build_s=$MOSQ_S"
