# Consul v1.22.3 (built from its Go module by `make tools`) on Debian bookworm: a stand-in for
# hashicorp/consul:1.22.3 where that cannot be pulled. Same entrypoint contract: the command is
# consul's arguments (`agent -dev -client 0.0.0.0`, the official image's default), or `consul ...`.
ARG BASE
FROM ${BASE}
COPY consul /bin/consul
RUN useradd --system --uid 100 --home-dir /consul consul \
    && mkdir -p /consul/data /consul/config && chown -R consul:consul /consul \
    && printf '#!/bin/sh\nset -e\n[ "$1" = consul ] && shift\nexec consul "$@"\n' >/usr/local/bin/docker-entrypoint.sh \
    && chmod 0755 /usr/local/bin/docker-entrypoint.sh
USER consul
WORKDIR /consul
EXPOSE 8300 8301 8301/udp 8302 8302/udp 8500 8502 8600 8600/udp
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
