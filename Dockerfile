# The image behind every service of docker-compose.yml that runs our code: the MLflow tracking
# server and the Ray head and worker nodes (deploy/kuberay.yaml uses it too). PyPI's torch wheels
# for Linux carry CUDA, so the same image trains on a GPU (with the NVIDIA container runtime) and
# on a CPU. For a smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
# A driver that joins the cluster through Ray Client (ray://) needs this image's Python (3.11)
# and Ray versions.

# The wheel, built from the project's files: it carries the package and its search spaces.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --no-cache-dir -w /wheels .

FROM python:3.11-slim
ARG TORCH_INDEX_URL=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIPELINE_DATA_DIR=/data
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4" "torchvision>=0.19"; \
    fi
# postgres: psycopg 3; ray: the cluster's nodes (ray[default] adds its dashboard).
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/pipeline-*.whl)[postgres,ray]" "ray[default]" && rm -rf /wheels
WORKDIR /app
CMD ["pipeline", "--help"]
