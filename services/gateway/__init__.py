"""gateway: the HTTP/JSON front door; translates to gRPC calls over xds:///NAME."""
