# The Switchyard container image: the `switchyard` binary, the example plugins, and only what
# the binary loads at run time (the C library, libgcc, zlib, OpenSSL) and CA certificates, on
# an empty base. It runs as the unprivileged user `switchyard` (uid 10001).
#
#   docker build -t switchyard .
#   docker run --rm switchyard demo --duration 10        # the demo on its embedded broker
#   docker run --rm --network host -v $PWD/switchyard.toml:/etc/switchyard/switchyard.toml:ro \
#     switchyard run --config /etc/switchyard/switchyard.toml
#
# A config mounted read-only needs `admin.state_dir` set to a writable directory, e.g.
# "/var/lib/switchyard/state" (the default is next to the config file). The admin API refuses
# a non-loopback address without a token: set SWITCHYARD_ADMIN_TOKEN (or admin.tokens) and
# `admin.listen = "0.0.0.0:9644"` to reach it from outside the container.
#
# Two ways to get the binary:
# - the default target builds it and the plugins here (stage `build`, needs the rust image);
# - `--target prebuilt` takes a binary built beforehand, from a build context holding
#   `switchyard` and `plugins/*.wasm` (the test command builds the image this way, to reuse
#   its cached release build):
#     mkdir -p ctx/plugins && cp target/release/switchyard ctx/ \
#       && cp plugins/target/wasm32-wasip2/release/*.wasm ctx/plugins/
#     docker build --target prebuilt -t switchyard -f Dockerfile ctx
# Each target only builds the stages it needs.

# The base of the stage that gathers the runtime's files (a Debian 12 image with apt).
ARG BASE_IMAGE=debian:bookworm-slim
# The example plugins baked in (the test-only ones, misbehave and statebench, are left out).
ARG PLUGINS="validate enrich transform route noop window join"

FROM rust:1.95-bookworm AS build
ARG PLUGINS
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cd plugins && cargo build --release --target wasm32-wasip2 \
 && cd .. && cargo build --release -p switchyard \
 && mkdir -p /out/plugins && cp target/release/switchyard /out/ \
 && for p in $PLUGINS; do cp plugins/target/wasm32-wasip2/release/$p.wasm /out/plugins/; done

# The runtime's files, gathered into /rootfs: CA certificates, OpenSSL's directory (its default
# certificate paths point there), a passwd entry, a writable /tmp and home; then the binary,
# the plugins, and each shared library `ldd` says the binary loads (so the list follows the
# binary, not a guess). The binary loses its debug information (the release profile's line
# tables, three quarters of its size) but keeps its symbols, so a backtrace still names
# functions.
FROM ${BASE_IMAGE} AS runtime-files
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 binutils \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /rootfs/etc /rootfs/usr/share/switchyard/plugins-target/wasm32-wasip2/release \
 && cp -a --parents /etc/ssl/certs/ca-certificates.crt /usr/lib/ssl /rootfs/ \
 && install -d -m 1777 /rootfs/tmp \
 && install -d -m 0700 -o 10001 -g 10001 /rootfs/var/lib/switchyard \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nswitchyard:x:10001:10001::/var/lib/switchyard:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nswitchyard:x:10001:\n' > /rootfs/etc/group

FROM runtime-files AS files-built
COPY --from=build /out/switchyard /rootfs/usr/local/bin/switchyard
COPY --from=build /out/plugins/ /rootfs/usr/share/switchyard/plugins-target/wasm32-wasip2/release/
RUN strip --strip-debug /rootfs/usr/local/bin/switchyard \
 && for lib in $(ldd /rootfs/usr/local/bin/switchyard | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do \
      cp -L --parents "$lib" /rootfs/; done

FROM runtime-files AS files-prebuilt
ARG PLUGINS
COPY switchyard /rootfs/usr/local/bin/switchyard
COPY plugins/ /plugins/
RUN for p in $PLUGINS; do cp /plugins/$p.wasm /rootfs/usr/share/switchyard/plugins-target/wasm32-wasip2/release/; done \
 && strip --strip-debug /rootfs/usr/local/bin/switchyard \
 && for lib in $(ldd /rootfs/usr/local/bin/switchyard | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do \
      cp -L --parents "$lib" /rootfs/; done

# The image itself, once per way of getting the binary (identical but for the stage copied).
FROM scratch AS prebuilt
COPY --from=files-prebuilt /rootfs /
USER 10001:10001
WORKDIR /var/lib/switchyard
ENV HOME=/var/lib/switchyard \
    SWITCHYARD_PLUGINS_TARGET_DIR=/usr/share/switchyard/plugins-target
EXPOSE 9644
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--help"]

FROM scratch AS runtime
COPY --from=files-built /rootfs /
USER 10001:10001
WORKDIR /var/lib/switchyard
ENV HOME=/var/lib/switchyard \
    SWITCHYARD_PLUGINS_TARGET_DIR=/usr/share/switchyard/plugins-target
EXPOSE 9644
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--help"]
