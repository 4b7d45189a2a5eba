# Build: docker build -t weir .
# Run:   docker run -p 8080:8080 -v "$PWD/my-config:/etc/weir" weir
#        (in a container the listener must bind 0.0.0.0, not the example's 127.0.0.1)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# mimalloc's build flags (transparent huge pages off)
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin weir

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 weir
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY config /etc/weir
USER weir
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run", "--config", "/etc/weir/weir.yaml"]
