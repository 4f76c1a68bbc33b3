# syntax=docker/dockerfile:1
#
# lead-lab: one crate, one binary. SQL migrations under clickhouse/migrations
# are embedded at compile time, so the runtime image needs only the binary.
# Build with BuildKit (default in Docker 23+; for docker-compose 1.29 set
# DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1) so the cache mounts work.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# rustls pulls in aws-lc-sys / ring, which build C code; cmake and perl cover
# aws-lc-sys's fallback build path. No OpenSSL and no protoc are needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config cmake perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked --bin lead-lab \
    && install -D -m 0755 target/release/lead-lab /out/lead-lab

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates for outbound TLS, curl for the compose healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 leadlab \
    && useradd --system --uid 10001 --gid leadlab --home-dir /nonexistent \
       --shell /usr/sbin/nologin leadlab
COPY --from=builder /out/lead-lab /usr/local/bin/lead-lab
USER leadlab:leadlab
ENV LEADLAB_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["lead-lab"]
CMD ["serve"]
