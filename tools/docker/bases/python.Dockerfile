# Local stand-in for python:3.11-slim-bookworm: Debian's python3 (3.11 in bookworm) with venv.
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
