# syntax=docker/dockerfile:1
#
# batch-processor: build with the Rust toolchain, run on a slim Debian as a non-root user.
#
#   docker build -t batch-processor .
#   docker run --rm -e REDIS_HOST=redis -p 9464:9464 batch-processor
#   docker run --rm -e REDIS_HOST=redis batch-processor status
#
# scripts/image-test builds this file unchanged with podman and runs the image for real.
#
# Settings come from REDIS_* environment variables (see the README). The defaults are
# compiled into the binary; config/ is copied to /etc/batch-processor/ as a reference and as
# a starting point for `--config /etc/batch-processor/<file>.toml`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY config/ config/
COPY src/ src/
# The cache mounts keep the registry and the build directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin batch-processor \
    && cp target/release/batch-processor /usr/local/bin/batch-processor

FROM debian:bookworm-slim
# ca-certificates for rediss:// (TLS). The health check is the binary itself, so no curl.
# Unpinned on purpose: bookworm's security updates replace these versions, and a pin would
# break the build the day they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 batch \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin batch
COPY --from=builder /usr/local/bin/batch-processor /usr/local/bin/batch-processor
COPY config/ /etc/batch-processor/
USER 10001:10001
# /healthz, /readyz and /metrics (REDIS_HTTP_ADDR, default 0.0.0.0:9464).
EXPOSE 9464
# SIGTERM starts a graceful shutdown bounded by REDIS_SHUTDOWN_GRACE (at most 4.5 s), well
# inside Docker's default 10 s stop timeout.
STOPSIGNAL SIGTERM
# Liveness: `health` asks the daemon's own /healthz on REDIS_HTTP_ADDR, whatever it is set to.
# docker-compose.yml checks readiness (`health --ready`, /readyz) instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["batch-processor", "health"]
ENTRYPOINT ["batch-processor"]
CMD ["run"]
