# syntax=docker/dockerfile:1
# Sluice's container image: built with cargo in the official Rust image, shipped on
# distroless (glibc and CA certificates, no shell, no package manager), as a non-root user.
#
#   docker build -t sluice:dev .
#
# The chart runs it with a read-only root filesystem and every capability dropped; Sluice
# writes nothing to disk.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
    && install -D -m 0755 target/release/sluice /out/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# distroless's "nonroot" user; the chart sets the same IDs.
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run"]
