# syntax=docker/dockerfile:1
#
# The core image: a static binary on distroless, non-root, no shell.
#
# Build from the repository root (the Go workspace: the service module replaces proto => ../proto):
#
#   docker build -f deploy/docker/core.Dockerfile \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t custos/core:dev .
#
# The context is filtered by core.Dockerfile.dockerignore (beside this file). The image runs
# with a read-only root filesystem: it writes nothing. Configuration is the environment
# (README: "Configuration"); certificates and the database URL are mounted files.

ARG GO_IMAGE=golang:1.27-bookworm
# Pin by digest for production builds (base@sha256:…); the tag keeps this file readable.
ARG BASE_IMAGE=gcr.io/distroless/static-debian13:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
# The modules declare go 1.27; older patch releases carry known crypto/tls and net/http
# vulnerabilities, so the toolchain is pinned (fetched from the module proxy when the image's differs).
ENV GOTOOLCHAIN=go1.27.3 \
    CGO_ENABLED=0 \
    GOFLAGS=-buildvcs=false
WORKDIR /src
# The workspace needs every module's go.mod; only the sources this binary builds from are copied.
# go build fetches just the modules it compiles (cached across builds by the cache mounts).
COPY go.work go.work.sum ./
COPY encryption-service/go.mod encryption-service/go.sum encryption-service/
COPY proto/ proto/
COPY core/ core/
ARG VERSION=dev
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/core ./core/cmd/core

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="custos-core" \
      org.opencontainers.image.description="Custos core: users, authentication, vault; calls the encryption service over mutual TLS 1.3" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/custos-platform/custos" \
      org.opencontainers.image.vendor="Custos"
COPY --from=build /out/core /usr/local/bin/core
# distroless "nonroot": uid/gid 65532, listed in its /etc/passwd.
USER 65532:65532
# REST (grpc-gateway, /healthz, /readyz) and gRPC; both TLS 1.3.
EXPOSE 8443 8444
ENTRYPOINT ["/usr/local/bin/core"]
CMD ["serve"]
