# Local stand-in for node:20-bookworm-slim at run time: Debian trixie's nodejs (20), no npm.
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends nodejs \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
