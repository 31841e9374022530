# syntax=docker/dockerfile:1
# The bridge's container image:
#   docker build -t city-bridge .
#   docker run --env-file … -v ./registration.yaml:/etc/city-bridge/registration.yaml:ro city-bridge
# compose.yaml runs it with Synapse, Postgres and NATS (README, "Containers"). Builder and
# runtime are both Debian 12 (bookworm), so the binary's glibc is the runtime's.

FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /src
# Only what the build reads: the manifest names the benches, and the migrations are
# compiled in (sqlx::migrate!).
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY bench bench
# The crates and target/ stay in BuildKit cache mounts between builds, so a change to the
# bridge recompiles the bridge, not its dependencies. A cache mount is not part of the
# image: the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin city-bridge \
    && cp target/release/city-bridge /usr/local/bin/city-bridge

FROM debian:12.13-slim
# ca-certificates for TLS to NATS or a homeserver elsewhere. Its version is the one of the
# pinned Debian release (and its security updates), so it is not pinned again here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 city-bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin city-bridge
COPY --from=builder /usr/local/bin/city-bridge /usr/local/bin/city-bridge
# The default APPSERVICE_REGISTRATION (./registration.yaml) is looked for here.
WORKDIR /etc/city-bridge
# Numeric, so that a runtime can see it is not root without reading /etc/passwd.
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:7025
EXPOSE 7025
# The image has no curl: the binary asks its own /healthz (liveness, always 200 while it
# serves). Its default URL is port 7025: pass --url when LISTEN_ADDR moves the port.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["city-bridge", "healthcheck"]
ENTRYPOINT ["city-bridge"]
CMD ["serve"]
