# mcpvisor in a small image: `docker build -t mcpvisor:0.2.0 .`
#
# The image holds mcpvisor alone (glibc, no shell, a non-root user). Use it
#  - as a base stage to copy the binary from, into an image that has your server's runtime
#    (examples/container/Dockerfile.node, Dockerfile.python), or
#  - as a Kubernetes init container that puts the binary into a volume shared with your server's
#    own image, unchanged: `mcpvisor install-into /mcpvisor` (deploy/kubernetes).

FROM rust:1-bookworm AS build
WORKDIR /src
# The manifest names the benches and the test server, so the whole tree is copied
# (.dockerignore keeps target/ and .git out).
COPY . .
RUN cargo build --release --locked --bin mcpvisor \
 && strip target/release/mcpvisor

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mcpvisor /usr/local/bin/mcpvisor
# Sockets and state go where a read-only root file system still lets them.
ENV MCPVISOR_RUNTIME_DIR=/tmp/mcpvisor
USER nonroot
ENTRYPOINT ["/usr/local/bin/mcpvisor"]
CMD ["--help"]
