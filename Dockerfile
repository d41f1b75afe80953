# syntax=docker/dockerfile:1
#
# One image for every role of ordo: `ordo api`, `ordo relay`, `ordo projector`,
# `ordo saga`, `ordo migrate` (docker-compose.yml runs one container per role) and
# `ordo up` (all in one).
#
#   docker build -t ordo .
#   docker run --rm ordo --help

# ---- builder: the release binary ----------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace (minus what .dockerignore leaves out): the crates depend on each
# other by path, and --locked builds exactly what Cargo.lock says.
COPY . .
# BuildKit cache mounts keep the crate registry and target/ between builds; the binary is
# copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cli \
 && install -D -m 0755 target/release/ordo /out/ordo

# ---- runtime: debian slim, non-root ---------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to PostgreSQL / NATS when the URLs ask for it.
# curl: only for the api healthcheck in docker-compose.yml (GET /health); ordo has no
# health subcommand, and curl is the plainest probe (about 1 MB with its libraries).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ordo \
 && useradd --system --uid 10001 --gid ordo --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ordo
COPY --from=builder /out/ordo /usr/local/bin/ordo
# The event JSON Schemas and SQL migrations, for anything that reads them at run time
# (event envelopes point at schemas/events/... by relative path).
WORKDIR /app
COPY schemas/ /app/schemas/
# Numeric, so that runtimes that enforce "run as non-root" can check it.
USER 10001:10001
# In a container the API must listen beyond loopback; logs go out as JSON.
ENV ORDO_HTTP_ADDR=0.0.0.0:8080 \
    ORDO_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["ordo"]
CMD ["--help"]
