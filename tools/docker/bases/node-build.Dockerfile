# Local stand-in for node:20-bookworm-slim in a build stage: nodejs and npm (trixie's npm 9).
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
