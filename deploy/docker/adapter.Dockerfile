# mcp-adapter image: the MCP server with no AWS identity of its own.
#
#   docker build -f deploy/docker/adapter.Dockerfile -t mcp-adapter:dev .   # from the repo root
#
# Same layout as broker.Dockerfile (see there): dependencies compiled against stub sources in a
# cached layer, then the real adapter sources; distroless runtime without a shell, uid 65532.
# The adapter does not link aws-config, so no AWS credential can be loaded inside this image
# whatever the environment holds; the ECS task definition gives it no task role either.
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
 && cargo build --profile dist --locked -p mcp-adapter \
 && rm -rf adapter/src

# --- the adapter itself ------------------------------------------------------------------------
COPY adapter/src/ adapter/src/
RUN touch adapter/src/main.rs adapter/src/lib.rs \
 && cargo build --profile dist --locked -p mcp-adapter --bin mcp-adapter \
 && install -D -m 0755 target/dist/mcp-adapter /out/mcp-adapter \
 && /out/mcp-adapter --version

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/mcp-adapter /usr/local/bin/mcp-adapter
USER 65532:65532
ENV ADAPTER_LISTEN=0.0.0.0:8000
# 8000 MCP (Streamable HTTP on /mcp, /healthz, protected resource metadata),
# 9464 Prometheus (only when ADAPTER_METRICS_LISTEN is set).
EXPOSE 8000 9464
# `mcp-adapter healthcheck` GETs http://<ADAPTER_LISTEN>/healthz (0.0.0.0 dialled as 127.0.0.1)
# and exits 0 on 200: there is no curl or shell in a distroless image, so the check is the
# binary itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/mcp-adapter", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mcp-adapter"]
