# Builds the container image the deployment tests run (sourced after lib.sh): sets $image.
#
# There is no image registry on the test machines, so the two images the Dockerfile starts
# from are replaced: the Debian base by a minimal Debian 12 made with mmdebstrap (kept as a
# tarball under $SWITCHYARD_TOOLS/deploy, made once), and the Rust build stage by the
# Dockerfile's `prebuilt` target, fed the release binary and plugins built on this machine.

image=localhost/switchyard-test
base_image=localhost/switchyard-test-base:bookworm

build_image() {
  need_packages podman runc mmdebstrap
  local tools="${SWITCHYARD_TOOLS:-$HOME/.cache/switchyard/tools}"
  local tarball="$tools/deploy/debian-bookworm-minbase.tar"
  if ! podman_ image exists "$base_image"; then
    if [ ! -s "$tarball" ]; then
      say "making the Debian base image (mmdebstrap, about a minute)"
      mkdir -p "$(dirname "$tarball")"
      mmdebstrap --quiet --format=tar --variant=minbase bookworm "$tarball.part" http://deb.debian.org/debian
      mv "$tarball.part" "$tarball"
    fi
    podman_ import "$tarball" "$base_image" >/dev/null
  fi

  local bin="${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/switchyard}"
  local wasm="${SWITCHYARD_PLUGINS_TARGET_DIR:-$repo/plugins/target}/wasm32-wasip2/release"
  [ -x "$bin" ] || { say "no release binary at $bin (cargo build --release -p switchyard)"; return 1; }
  mkdir -p "$work/context/plugins"
  cp "$bin" "$work/context/switchyard"
  cp "$wasm"/*.wasm "$work/context/plugins/"
  say "building $image (Dockerfile, target prebuilt)"
  local before status=0
  before=$(podman_ images -q --filter dangling=true | sort)
  # The stage that installs packages, tagged so it stays cached (the build after reuses it).
  podman_ build --network host --ulimit nofile=1024:20000 --pull=never \
    --build-arg BASE_IMAGE="$base_image" --target runtime-files -t "$image-runtime-files" \
    -f "$repo/Dockerfile" "$work/context" >"$work/build.log" 2>&1 &&
    podman_ build --network host --ulimit nofile=1024:20000 --pull=never \
      --build-arg BASE_IMAGE="$base_image" --target prebuilt -t "$image" \
      -f "$repo/Dockerfile" "$work/context" >>"$work/build.log" 2>&1 || status=$?
  # Each build leaves untagged images (the stage holding the unstripped binary, the image it
  # replaced): remove those this build made, so repeated runs do not fill the disk.
  comm -13 <(printf '%s\n' "$before") <(podman_ images -q --filter dangling=true | sort) |
    xargs -r podman --runtime runc --cgroup-manager=cgroupfs rmi -f >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    tail -30 "$work/build.log"
    return 1
  fi
}
