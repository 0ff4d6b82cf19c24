# The product's four images, one target each, from the repository root:
#
#   docker build --target agent    -t pod-identity/agent:TAG    .
#   docker build --target webhook  -t pod-identity/webhook:TAG  .
#   docker build --target eks-auth -t pod-identity/eks-auth:TAG .
#   docker build --target demo-app -t pod-identity/demo-app:TAG .
#
# Each ships one binary (two for the agent) on a distroless base: glibc, libgcc, CA certificates;
# no shell, no package manager. Where no registry is reachable, scripts/images builds these same
# targets with buildah from two images it makes here: BINARIES (the release binaries under /out,
# built by `cargo build --release --locked` on the machine) and BASE (this machine's Debian 12
# glibc and CA bundle, what distroless cc-debian12 holds). Only the build stage differs.
ARG BUILDER=docker.io/library/rust:1.95-bookworm
ARG BASE=gcr.io/distroless/cc-debian12
ARG BINARIES=build
# What the binaries report (`version`, `--version`, their start line) and the images' OCI labels
# say: the release and the git revision, e.g. --build-arg REVISION=$(git rev-parse --short=12 HEAD).
ARG VERSION=0.1.0
ARG REVISION=unknown

FROM ${BUILDER} AS build
ARG REVISION
ENV POD_IDENTITY_GIT_REVISION=${REVISION}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pod-identity-agent -p pod-identity-webhook -p eks-auth -p demo-app --bins \
 && mkdir /out \
 && cd target/release \
 && install -m 0755 pod-identity-agent go-runner pod-identity-webhook eks-auth demo-app /out/

FROM ${BINARIES} AS binaries

# What every image of the product says of itself (OCI annotations as image labels).
FROM ${BASE} AS product
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.source="https://github.com/pod-identity-rs/pod-identity" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# The agent, laid out as the official image is (/go-runner, /eks-pod-identity-agent), so the
# official Helm chart runs it with only the image changed. It runs as root, as the official one
# does: Kubernetes grants an added capability (NET_BIND_SERVICE for port 80) to uid 0 alone, and
# the agent drops every capability and sets no_new_privs once it has bound.
FROM product AS agent
LABEL org.opencontainers.image.title="pod-identity-agent" \
      org.opencontainers.image.description="The node-local EKS Pod Identity credential agent"
COPY --from=binaries /out/go-runner /go-runner
COPY --from=binaries /out/pod-identity-agent /eks-pod-identity-agent
USER 0:0
ENTRYPOINT ["/eks-pod-identity-agent"]
CMD ["--help"]

FROM product AS webhook
LABEL org.opencontainers.image.title="pod-identity-webhook" \
      org.opencontainers.image.description="The EKS Pod Identity admission webhook"
COPY --from=binaries /out/pod-identity-webhook /pod-identity-webhook
USER 65532:65532
ENTRYPOINT ["/pod-identity-webhook"]
CMD ["--help"]

FROM product AS eks-auth
LABEL org.opencontainers.image.title="eks-auth" \
      org.opencontainers.image.description="The EKS Auth API for clusters that are not EKS"
COPY --from=binaries /out/eks-auth /eks-auth
USER 65532:65532
ENTRYPOINT ["/eks-auth"]
CMD ["--help"]

FROM product AS demo-app
LABEL org.opencontainers.image.title="demo-app" \
      org.opencontainers.image.description="Walks an AWS SDK's default credential chain and says which provider wins"
COPY --from=binaries /out/demo-app /demo-app
USER 65532:65532
ENTRYPOINT ["/demo-app"]
