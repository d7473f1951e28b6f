# leadhook sidecar image. Not built by CI (no Docker engine there); kept
# simple: build with the Rust toolchain, run from a small distroless base.
#
#   docker build -t leadhook .
#   docker run --rm -v $PWD/sidecar.toml:/etc/leadhook/sidecar.toml:ro \
#       -e LEADHOOK_DATABASE__URL=postgres://... -p 9187:9187 leadhook

FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY sql ./sql
# The workspace's other members must be present to resolve it; without the
# default `demo` feature the image carries no test kit.
COPY testkit ./testkit
COPY bench ./bench
RUN cargo build --release --locked --no-default-features --bin leadhook

# glibc, CA certificates, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/leadhook /usr/local/bin/leadhook
# In a container the admin port must listen beyond loopback to be scraped.
ENV LEADHOOK_CONFIG=/etc/leadhook/sidecar.toml \
    LEADHOOK_ADMIN__LISTEN=0.0.0.0:9187
EXPOSE 9187
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/leadhook"]
CMD ["run"]
