# The image behind every service of docker-compose.yml that runs our code: the MLflow tracking
# server and the search workers. PyPI's torch wheels for Linux carry CUDA, so the same image
# trains on a GPU (with the NVIDIA container runtime) and on a CPU. For a smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
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
RUN pip install -e ".[postgres]"

# Reports land in /app/reports; MNIST is cached in /data (a volume shared by the workers).
CMD ["pipeline", "--help"]
