# Image of the node agent (DaemonSet on GPU nodes; NVML comes from the NVIDIA container runtime).
# Build from the repository root:  docker build -f images/node-agent.Dockerfile -t egpu-node-agent:dev .
#
# Two stages: the first installs the project (its pyproject.toml pins every dependency) into a
# virtualenv, the second copies only that virtualenv onto the same slim base, so no compiler,
# pip cache or source tree ships. The base is pinned by tag; pin it by digest where you build
# (docker buildx imagetools inspect python:3.11.14-slim-bookworm).
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
COPY node-agent node-agent
COPY localcluster localcluster
RUN python -m venv /opt/egpu && /opt/egpu/bin/pip install .

FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/egpu/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/egpu /opt/egpu
# Non-root by default (the chart's pods run as this user with a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["egpu-node-agent"]
CMD ["run"]
