# credential-broker image: the only component with an AWS identity.
#
#   docker build -f deploy/docker/broker.Dockerfile -t credential-broker:dev .   # from the repo root
#
# Two stages:
#   1. builder (rust:1.95-bookworm): compiles the dependencies against stub sources first, so that
#      layer is reused until Cargo.toml/Cargo.lock (or proto/) change; then compiles the real
#      broker sources. No BuildKit cache mounts are needed, so plain `docker build` and CI layer
#      caches (--cache-from) both work.
#   2. runtime (distroless cc, Debian 12, :nonroot): glibc + libgcc + CA certificates, no shell, no
#      package manager, uid/gid 65532. The binary is built on bookworm, so its glibc matches.
#
# Base images are pinned by digest (Rust 1.95 on bookworm: aws-smithy needs rustc 1.94.1 or
# later; distroless cc-debian12 nonroot), so a rebuild uses the bytes that were reviewed.
# deploy/README.md shows how to move both pins to the current digests with --build-arg
# (tests/deploy checks the defaults and its build commands carry @sha256:).
# The `dist` profile (Cargo.toml) is release with symbols stripped: a smaller image to pull on
# every task start (sizes in deploy/README.md).
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# --- dependencies (cached layer) -------------------------------------------------------------
# Every workspace member's manifest must be present for cargo to load the workspace, even the
# members this image does not build (adapter, tests, bench); they get empty stub sources.
# proto/ is copied whole: its build script compiles the .proto file, and it rarely changes.
COPY Cargo.toml Cargo.lock ./
COPY proto/ proto/
# kit/ (credbroker-kit, shared by both binaries) is a dependency: copied whole, like proto/.
COPY kit/ kit/
COPY broker/Cargo.toml broker/Cargo.toml
COPY adapter/Cargo.toml adapter/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p broker/src adapter/src tests/src bench/src/bin \
 && echo 'fn main() {}' > broker/src/main.rs && touch broker/src/lib.rs \
 && echo 'fn main() {}' > adapter/src/main.rs && touch adapter/src/lib.rs \
 && touch tests/src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs && touch bench/src/lib.rs \
 && echo 'fn main() {}' > bench/src/bin/s3-stub.rs \
 && echo 'fn main() {}' > bench/src/bin/adapter-floor.rs \
 && echo 'fn main() {}' > bench/src/bin/adapter-counted.rs \
 && cargo build --profile dist --locked -p credential-broker \
 && rm -rf broker/src

# --- the broker itself -------------------------------------------------------------------------
COPY broker/src/ broker/src/
# touch: COPY keeps the files' mtimes, which may be older than the stub build's fingerprints;
# touching the crate roots makes cargo rebuild the broker (and only the broker).
RUN touch broker/src/main.rs broker/src/lib.rs \
 && cargo build --profile dist --locked -p credential-broker --bin credential-broker \
 && install -D -m 0755 target/dist/credential-broker /out/credential-broker \
 && install -d -m 0700 /out/audit \
 && /out/credential-broker --version

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/credential-broker /usr/local/bin/credential-broker
# BROKER_AUDIT_LOG's directory in the ECS task (a task volume shared with the audit-log shipper),
# owned by the broker's user: ECS copies the image's directory and its ownership to the volume.
COPY --from=builder --chown=65532:65532 /out/audit /audit
# Numeric ids so that orchestrators that check "runAsNonRoot" can verify them without /etc/passwd.
USER 65532:65532
# Inside a container the broker must listen on all interfaces; outside it defaults to loopback.
# `healthcheck` reads the same variable (and dials 127.0.0.1 for 0.0.0.0).
ENV BROKER_LISTEN=0.0.0.0:50051
# 50051 gRPC, 9464 Prometheus (only when BROKER_METRICS_LISTEN is set).
EXPOSE 50051 9464
# Exec form: there is no shell in this image. Exit 0 only when gRPC health says SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/credential-broker", "healthcheck"]
# SIGTERM starts the graceful shutdown (health NOT_SERVING, drain for BROKER_SHUTDOWN_TIMEOUT,
# default 20 s); give the container more than that before SIGKILL (docker stop -t 30, ECS
# stopTimeout 30, compose stop_grace_period 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/credential-broker"]
CMD ["serve"]
