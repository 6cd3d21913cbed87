# syntax=docker/dockerfile:1
# entourage: one static binary for every role (serve, adapt, ambassador, inject, review, certs).
#   docker build -t ghcr.io/entourage-dev/entourage:0.1.0 .
# The webhook injects containers with `args: ["stream", …]`, `args: ["adapt", …]` and `args: ["ambassador", …]`: they
# rely on the ENTRYPOINT below being the binary; native log readers' startup probe runs `/entourage started` directly.

# Build stage: Alpine is musl-native, so a plain release build links statically; with buildx each platform
# builds natively (or under emulation), so no cross linker is needed.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-alpine AS build
# ring compiles a little C and assembly.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=true \
    RUSTFLAGS="-C target-feature=+crt-static"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin entourage \
    && cp target/release/entourage /entourage
# Fail the build rather than ship a binary that needs a dynamic loader the runtime image does not have.
RUN if readelf -l /entourage | grep -q 'Requesting program interpreter'; then \
      echo "entourage is not statically linked" >&2; exit 1; \
    fi \
    && /entourage --version

# Runtime: distroless static (CA certificates for the ambassador's TLS upstreams, /etc/passwd with nonroot,
# no shell), about 2 MB; the binary brings the rest.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /entourage /entourage
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/entourage"]
CMD ["serve"]
