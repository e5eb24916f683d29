# The Switchyard container image: the `switchyard` binary and the example plugins.
#
#   docker build -t switchyard .
#   docker run --rm -p 9644:9644 -v $PWD/switchyard.toml:/etc/switchyard/switchyard.toml \
#     switchyard run --config /etc/switchyard/switchyard.toml
#   docker run --rm switchyard demo        # the demo on its embedded broker
#
# The admin API refuses a non-loopback address without a token: set SWITCHYARD_ADMIN_TOKEN
# (or admin.tokens in the config) and listen on 0.0.0.0:9644 to reach it from outside.
# Not built on the development machines (they have no Docker engine).

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cd plugins && cargo build --release --target wasm32-wasip2 \
 && cargo build --release -p switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/switchyard --create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY --from=build /src/plugins/target/wasm32-wasip2/release/*.wasm /usr/share/switchyard/plugins-target/wasm32-wasip2/release/
USER switchyard
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_PLUGINS_TARGET_DIR=/usr/share/switchyard/plugins-target
EXPOSE 9644
ENTRYPOINT ["switchyard"]
CMD ["--help"]
