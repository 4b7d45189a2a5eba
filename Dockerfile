# syntax=docker/dockerfile:1
# weir's production image: the release binary on distroless (glibc, CA certificates, no
# shell), run as a numeric non-root user.
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t weir .
#   docker build --target rollout -t weir-rollout .   # the fleet's controller (needs git, ssh)
#   docker run -p 8080:8080 -p 9901:9901 weir        # the default config: config/container.yaml
#   docker run -v "$PWD/conf:/etc/weir:ro" -p 8080:8080 weir   # your own weir.yaml (a directory
#                                                    # mount, so that changes reload)
#
# The build context is an allowlist (.dockerignore): no target/, no .git. `weir --version` names
# the commit given as GIT_COMMIT.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# 1. The dependencies alone, from the manifest and the lock file with stub sources, so that a
#    source change does not rebuild every crate: this layer stays cached until Cargo.lock moves.
#    Every [[bench]] of Cargo.toml gets a stub too (cargo refuses a manifest naming a missing
#    target), read from the manifest so a new bench needs no change here.
COPY Cargo.toml Cargo.lock ./
# mimalloc's build flags (transparent huge pages off), which the dependencies need too.
COPY .cargo ./.cargo
RUN mkdir -p src benches \
    && echo 'fn main() {}' > build.rs \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && awk '/^\[\[bench\]\]/ { b = 1 } b && /^name/ { gsub(/"/, "", $3); print $3; b = 0 }' Cargo.toml \
       | while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin weir \
    && rm -rf src build.rs

# 2. weir itself. The stubs' build outputs are older than the real sources, which are touched so
#    that cargo rebuilds the crate (COPY keeps the files' own times).
ARG GIT_COMMIT=""
ENV WEIR_GIT_COMMIT=${GIT_COMMIT}
COPY build.rs ./
COPY src ./src
RUN find build.rs src -type f -exec touch {} + \
    && cargo build --release --locked --bin weir \
    && ./target/release/weir --version

# `weir rollout`, the fleet's controller (docs/FLEET.md), runs `git` (and ssh for its pushes) as
# child processes: the same binary on git-sync's image, which has both, on Debian (glibc).
FROM registry.k8s.io/git-sync/git-sync:v4.4.0 AS rollout
COPY --from=build /src/target/release/weir /usr/local/bin/weir
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["rollout", "--config", "/git/config/weir.yaml"]

FROM gcr.io/distroless/cc-debian12:nonroot
ARG GIT_COMMIT=""
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="A weighted L7 traffic-splitting reverse proxy for canary releases" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.documentation="README.md, docs/OPERATIONS.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY config/container.yaml /etc/weir/weir.yaml
COPY LICENSE /usr/share/doc/weir/LICENSE
# distroless's `nonroot`, by number, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# 8080: the listener of the default config; 9901: the admin API (probes, /metrics).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run", "--config", "/etc/weir/weir.yaml"]
