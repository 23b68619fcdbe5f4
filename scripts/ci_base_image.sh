#!/usr/bin/env bash
# A Debian bookworm + Python 3.11 base image made with debootstrap, for machines where the
# official python image cannot be pulled (no image registry reachable). It is what the
# Dockerfile's PYTHON_IMAGE needs: python (3.11) with venv, groupadd/useradd, a shell.
#
#   bash scripts/ci_base_image.sh            # prints the image name; idempotent
#
# The root file system is cached as a tarball under $SENTOPS_CI_CACHE (default
# /var/cache/sentops-ci), so a rerun only re-imports it (seconds) when the image was removed.
# Needs root, debootstrap and podman (scripts/ci_container.sh installs them).
set -euo pipefail

CACHE=${SENTOPS_CI_CACHE:-/var/cache/sentops-ci}
IMAGE=${SENTOPS_BASE_IMAGE:-localhost/sentops-base:bookworm-py311}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# bump to rebuild the cached root file system (e.g. for Debian security updates)
BASE_REV=1
TARBALL="$CACHE/bookworm-py311-r$BASE_REV.tar"

if podman image exists "$IMAGE" 2>/dev/null; then
  echo "$IMAGE"
  exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "ci_base_image: debootstrap bookworm into $root (a few minutes, once)" >&2
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # what the python image has and an image needs: no apt lists or caches, UTF-8
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" --numeric-owner -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi
podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$TARBALL" "$IMAGE" >&2
echo "$IMAGE"
