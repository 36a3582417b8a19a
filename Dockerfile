# syntax=docker/dockerfile:1
# The captioner HTTP service. Two targets:
#   docker build --target cpu  -t captioner:cpu  .   # python:3.11-slim, CPU-only torch wheels
#   docker build --target cuda -t captioner:cuda .   # CUDA 12.6 runtime, CUDA torch wheels
# Both serve on port 8000 as a non-root user. The default bundles are installed inside the
# package (site-packages/captioner/_weights) and served unless CAPTIONER_CAPTION_BUNDLE /
# _ACTIVITY_BUNDLE point elsewhere: mount your own folder (docker-compose.yml mounts weights/ at
# /weights) to serve other models without rebuilding. The image holds the runtime only: no data
# generators' libraries, no test tools.
#
# Every version comes from constraints.txt (the ones CI tests with). torch and torchvision are
# installed first from PyTorch's own package index (its CPU or CUDA 12.6 builds of those same
# versions), so `pip install /src` below finds them already satisfied instead of replacing them
# with the PyPI build.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Why nvidia/cuda and not pytorch/pytorch: the pytorch images bring their own conda Python
# (not necessarily 3.11) and their own torch build; here Python is Ubuntu 22.04's python3.11
# and torch is exactly the pinned wheel. Why CUDA 12.6 (torch's cu126 build) rather than the
# CUDA 13 build on PyPI: 12.x runs on any driver >= 525 (minor-version compatibility) and
# covers Volta to Hopper, while CUDA 13 needs driver >= 580. The torch wheels ship their own
# CUDA libraries, so `-base-` instead of `-runtime-` here also works and saves about 1.5 GB.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04
ARG TORCH_CUDA=cu126

# ---------------------------------------------------------------- cpu ------------------------
# Both default bundles (caption and activity) ship in weights/ and are served; set
# CAPTIONER_ENABLE_ACTIVITY=false to serve captions only.
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
RUN python -m venv /opt/venv \
 && pip install --index-url https://download.pytorch.org/whl/cpu -c /src/constraints.txt \
        torch torchvision
COPY pyproject.toml README.md /src/
COPY captioner /src/captioner
COPY service /src/service
# captioner/_weights is a link to ../weights: with weights/ beside it the bundles install as
# package data.
COPY weights /src/weights
# [export] brings ONNX Runtime: on the CPU the encoder runs in it, about 3.6x torch eager here
RUN pip install -c /src/constraints.txt "/src[export]"

FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH \
    CAPTIONER_DEVICE=cpu \
    CAPTIONER_ENABLE_ACTIVITY=true
RUN useradd --system --uid 10001 --create-home --home-dir /home/captioner captioner
COPY --from=cpu-build /opt/venv /opt/venv
USER captioner
WORKDIR /home/captioner
EXPOSE 8000
# /readyz answers 200 only once the models are loaded and warm; urlopen raises on 503.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["captioner", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- cuda -----------------------
FROM ${CUDA_IMAGE} AS cuda-python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM cuda-python AS cuda-build
ARG TORCH_CUDA
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
RUN python3.11 -m venv /opt/venv \
 && pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        -c /src/constraints.txt torch torchvision
COPY pyproject.toml README.md /src/
COPY captioner /src/captioner
COPY service /src/service
COPY weights /src/weights
RUN pip install -c /src/constraints.txt /src

FROM cuda-python AS cuda
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH \
    CAPTIONER_DEVICE=auto \
    CAPTIONER_ENABLE_ACTIVITY=true
RUN useradd --system --uid 10001 --create-home --home-dir /home/captioner captioner
COPY --from=cuda-build /opt/venv /opt/venv
USER captioner
WORKDIR /home/captioner
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["captioner", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- ray (batch jobs) ----------
# The cuda image plus Ray Data (the [ray] extra): the head and worker image of the KubeRay
# RayJob in deploy/k8s/ray/ (captioner caption ... --engine ray). KubeRay starts Ray in it.
FROM cuda-build AS ray-build
RUN pip install -c /src/constraints.txt "/src[ray]"

FROM cuda AS ray
COPY --from=ray-build /opt/venv /opt/venv
CMD ["captioner", "caption", "--help"]

