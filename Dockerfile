# syntax=docker/dockerfile:1
# One image for both `counterstack operator` and `counterstack web`.
#
#   docker build -t registry.example.com:5000/counterstack:0.1.0 .
#
# Build stage: release build, exactly the locked dependency versions.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
# Cache mounts keep the registry and target dir between builds (BuildKit); the binary
# is copied out of the cached target dir because cache mounts are not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin counterstack \
    && install -m 0755 target/release/counterstack /counterstack

# Runtime: distroless (glibc + libgcc, no shell, no package manager), non-root 65532.
# TLS uses rustls with bundled roots for the Kubernetes API (in-cluster CA), so no
# OpenSSL or CA bundle is needed beyond what the base image ships.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /counterstack /counterstack
USER 65532:65532
# 8080: web service; 8081: operator metrics and probes.
EXPOSE 8080 8081
ENTRYPOINT ["/counterstack"]
CMD ["--help"]
