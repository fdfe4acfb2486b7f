# Image of the operator (kopf; one replica).
# Build with hack/images/build.sh (it makes the base and the build context this file expects):
# nothing is pulled and the build runs without a network.
#
# The base, egpu-base:bookworm, is Debian bookworm's Python 3.11 made by hack/images/base.sh
# from Debian packages, with a passwd entry for uid 65532. The first stage installs the locked
# wheels (images/operator.lock, hashes required) and the project's wheel into a virtualenv; the
# second copies only that virtualenv, so no pip, wheel files or source tree ship.
ARG BASE=egpu-base:bookworm
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY wheels /wheels
RUN python3 -m venv /opt/egpu \
 && /opt/egpu/bin/pip install --no-index --find-links /wheels --require-hashes -r /wheels/requirements.lock \
 && /opt/egpu/bin/pip install --no-index --no-deps /wheels/egpu_operator-*.whl \
 && /opt/egpu/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
ENV PATH=/opt/egpu/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/egpu /opt/egpu
# Non-root by default (the chart's pods run as this user with a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["egpu-operator"]
CMD ["run"]
