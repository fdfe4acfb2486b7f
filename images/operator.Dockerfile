# Image of the operator (kopf; one replica).
# Build from the repository root:  docker build -f images/operator.Dockerfile -t egpu-operator:dev .
#
# Two stages: the first installs the project (its pyproject.toml pins every dependency) into a
# virtualenv, the second copies only that virtualenv onto the same slim base, so no compiler,
# pip cache or source tree ships. The base is pinned by tag and by the digest of its
# multi-architecture index (amd64 and arm64 alike: a Raspberry Pi 5 pulls the same pin); to move
# it, `docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints the current digest.
ARG BASE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
COPY node-agent node-agent
COPY localcluster localcluster
COPY runtime runtime
RUN python -m venv /opt/egpu && /opt/egpu/bin/pip install .

FROM ${BASE}
ENV PATH=/opt/egpu/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/egpu /opt/egpu
# Non-root by default (the chart's pods run as this user with a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["egpu-operator"]
CMD ["run"]
