# Image of the node agent (DaemonSet on GPU nodes; NVML comes from the NVIDIA container runtime).
# Build with hack/images/build.sh (it makes the base and the build context this file expects):
# nothing is pulled and the build runs without a network.
#
# The base, egpu-base:bookworm, is Debian bookworm's Python 3.11 made by hack/images/base.sh
# from Debian packages, with a passwd entry for uid 65532. The first stage installs the locked
# wheels (images/node-agent.lock, hashes required) and the project's wheel into a virtualenv; the
# second copies only that virtualenv, so no pip, wheel files or source tree ship.
#
# Every node pulls this image, often over a slow edge link, on each agent upgrade; so it ships
# only what a running agent uses:
# - not the Kubernetes client's asyncio copy (kubernetes.aio) nor aiohttp and the packages only it
#   needs: the agent uses the synchronous client (a unit test proves it imports without them);
# - not Debian's package tools (apt, dpkg's programs, debconf) nor perl, which only they use: the
#   image is rebuilt, never upgraded in place. dpkg's status file stays, for image scanners;
# - not what only builds or documents Python (ensurepip and its wheels, lib2to3, pydoc's topics,
#   the stdlib's test package), nor glibc's iconv modules (Python encodes without iconv).
# The slimmed tree is copied onto an empty image: files deleted in a layer would still be pulled.
# Python's compiled bytecode stays: the root filesystem is read-only, and without it every start
# on a small edge CPU compiles the Kubernetes client again.
ARG BASE=egpu-base:bookworm
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY wheels /wheels
RUN python3 -m venv /opt/egpu \
 && /opt/egpu/bin/pip install --no-index --find-links /wheels --require-hashes -r /wheels/requirements.lock \
 && /opt/egpu/bin/pip install --no-index --no-deps /wheels/egpu_operator-*.whl \
 && /opt/egpu/bin/pip uninstall --yes aiohttp aiohttp-retry aiohappyeyeballs aiosignal frozenlist multidict propcache yarl \
 && rm -rf /opt/egpu/lib/python3.11/site-packages/kubernetes/aio \
 && /opt/egpu/bin/pip uninstall --yes pip setuptools

FROM ${BASE} AS runtime
RUN rm -rf /usr/bin/apt* /usr/lib/apt /usr/lib/x86_64-linux-gnu/libapt-* /usr/lib/aarch64-linux-gnu/libapt-* \
      /etc/apt /var/lib/apt /var/cache/apt /var/log/apt \
      /usr/bin/dpkg* /usr/share/dpkg /var/lib/dpkg/info /usr/share/debconf /var/cache/debconf /usr/bin/debconf* \
      /usr/bin/perl* /usr/share/perl /usr/share/perl5 /usr/lib/*-linux-gnu/perl /usr/lib/*-linux-gnu/perl-base \
      /usr/lib/*-linux-gnu/perl5 /usr/lib/*-linux-gnu/libperl.so* \
      /usr/lib/*-linux-gnu/gconv /usr/share/python-wheels /usr/lib/python3.11/ensurepip /usr/lib/python3.11/lib2to3 \
      /usr/lib/python3.11/pydoc_data /usr/lib/python3.11/test /usr/share/doc /usr/share/man /usr/share/info

FROM scratch
# The whole slimmed tree on purpose (see the top): a layer that deletes files does not shrink a pull.
# hadolint ignore=DL3067
COPY --from=runtime / /
COPY --from=build /opt/egpu /opt/egpu
ENV PATH=/opt/egpu/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root by default (the chart's pods run as this user with a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["egpu-node-agent"]
CMD ["run"]
