# The image behind every service of docker-compose.yml that runs our code: the MLflow tracking
# server and the Ray head and worker nodes (deploy/kuberay.yaml uses it too). PyPI's torch wheels
# for Linux carry CUDA, so the same image trains on a GPU (with the NVIDIA container runtime) and
# on a CPU. For a smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
# A driver that joins the cluster through Ray Client (ray://) needs this image's Python (3.11)
# and Ray versions.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIPELINE_DATA_DIR=/data

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4" "torchvision>=0.19"; \
    fi
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY search_spaces ./search_spaces
# postgres: psycopg 3; ray: the cluster's nodes (ray[default] adds its dashboard).
RUN pip install -e ".[postgres,ray]" && pip install "ray[default]"

CMD ["pipeline", "--help"]
