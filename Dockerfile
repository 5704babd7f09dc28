# The `riverbed` daemon in a small image. Build from the repository root:
#
#   docker build -t riverbed .
#   docker run --rm -v "$PWD/recipes:/etc/riverbed:ro" riverbed validate /etc/riverbed/transactions/pipeline.toml
#
# deploy/compose.yaml runs the ledger recipe with RabbitMQ, PostgreSQL and Redis.
# Nothing in the test suite needs Docker.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The release profile of the workspace; --locked builds exactly what Cargo.lock pins.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p riverbed \
    && install -D target/release/riverbed /out/riverbed

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/riverbed --create-home riverbed
COPY --from=build /out/riverbed /usr/local/bin/riverbed
COPY recipes /usr/share/riverbed/recipes
USER riverbed
WORKDIR /var/lib/riverbed
# tini forwards SIGTERM: riverbed stops consuming, writes and acknowledges what is in flight
# (within `shutdown_grace`), then exits 0. Give the container at least that long to stop.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/riverbed"]
CMD ["--help"]
