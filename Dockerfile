# syntax=docker/dockerfile:1
#
# The two images of sagaflow, built from one Rust build:
#
#   docker build --target sagaflow-operator -t sagaflow-operator:0.1.0 .
#   docker build --target sagaflow          -t sagaflow:0.1.0 .     (also the default: last stage)
#
# `sagaflow` runs the services: its ENTRYPOINT is the binary, so the operator's Deployments
# (`args: ["serve", "<service>"]`, no `command`) run `sagaflow serve <service>`, and a bare
# `docker run` runs the all-in-one. `sagaflow-operator` runs the operator: the chart passes
# `args: ["run", "--lease-name=…", …]`. Both are non-root (uid 65532, numeric so that
# `runAsNonRoot` can be verified), write nothing outside their data volume and run with a
# read-only root filesystem. scripts/check/dockerfile.sh checks all of this without Docker.
#
# Needs BuildKit (the default builder of Docker 23 and later) for the cache mounts.

# Debian 12 (bookworm) on both sides, so the binaries link against the glibc (2.36) the runtime
# image carries. The runtime image has glibc, libgcc_s and CA certificates, and no shell.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the runtime stages take the binaries from: `build` compiles them here; `prebuilt` takes
# binaries compiled on the host into target/tilt/ (the Tiltfile's fast path, Linux hosts only).
ARG BINARIES=build
ARG VERSION=0.1.0
ARG REVISION=unknown

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what the workspace needs (.dockerignore admits nothing else): a change to the docs, the
# chart or the k6 scripts does not rebuild the binaries.
COPY Cargo.toml Cargo.lock ./
COPY services ./services
COPY operator ./operator
# The registry and the target directory live in cache mounts, so a rebuild compiles only what
# changed; the binaries are copied out of the cache in the same step.
RUN --mount=type=cache,id=sagaflow-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=sagaflow-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=sagaflow-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p sagaflow -p sagaflow-operator \
 && mkdir -p /out \
 && cp target/release/sagaflow target/release/sagaflow-operator /out/

FROM scratch AS prebuilt
COPY target/tilt/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS sagaflow-operator
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="sagaflow-operator" \
      org.opencontainers.image.description="The sagaflow Kubernetes operator: EventPipeline and ComplaintSaga" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/sagaflow-operator /usr/local/bin/sagaflow-operator
ENV LOG_FORMAT=json
USER 65532:65532
# /health/live, /health/ready and /metrics (`--port`).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sagaflow-operator"]
CMD ["run"]

FROM ${RUNTIME_IMAGE} AS sagaflow
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="sagaflow" \
      org.opencontainers.image.description="sagaflow's services: complaint, notification, audit and event store (sagaflow serve <service>), or all of them (sagaflow all-in-one)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/sagaflow /usr/local/bin/sagaflow
ENV LOG_FORMAT=json
USER 65532:65532
# The home of uid 65532 in the runtime image: `docker run sagaflow` keeps the all-in-one's state
# in ./sagaflow-data here. With --read-only, mount a volume and point SAGAFLOW_DATA_DIR at it
# (the operator mounts an emptyDir at /var/lib/sagaflow and sets SAGAFLOW_DATA_DIR).
WORKDIR /home/nonroot
# complaint, notification, audit, event store.
EXPOSE 3005 3006 3007 3008
ENTRYPOINT ["/usr/local/bin/sagaflow"]
# The all-in-one listens on loopback by default; in a container it must take outside connections.
CMD ["all-in-one", "--host", "0.0.0.0"]
