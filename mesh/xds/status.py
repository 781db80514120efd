"""`polymesh.controlplane.v1.StatusService` on the control plane's port: the reasons behind its
health names, for `make status` (and meshctl). Each answer is read from the live state: the
Istio folder's rejections and warnings (`mesh.xds.istio.IstioDir`), the services whose
translation fails (`mesh.xds.reconcile.Reconciler.failures`) and the failing background tasks
(`mesh.xds.supervise.Supervisor`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from mesh.xds.istio import IstioDir
from mesh.xds.names import ServiceKey
from polymesh.controlplane.v1 import status_pb2, status_pb2_grpc

__all__ = ["StatusServer", "response"]


def response(istio: IstioDir | None, translation_failures: Mapping[ServiceKey, str],
             failing_tasks: Mapping[str, str]) -> status_pb2.GetStatusResponse:
    out = status_pb2.GetStatusResponse(istio_dir=str(istio.directory) if istio else "")
    for what, reason in sorted((istio.rejections if istio else {}).items()):
        file, _, resource = what.partition(": ")
        out.rejected.add(file=file, resource=resource, reason=reason)
    for file, resource, field, reason in sorted(istio.warnings if istio else ()):
        out.warnings.add(file=file, resource=resource, field=field, reason=reason)
    for service, reason in sorted(translation_failures.items(), key=lambda item: item[0].fqdn):
        out.translation_failures.add(service=service.fqdn, reason=reason)
    for task, reason in sorted(failing_tasks.items()):
        out.failing_tasks.add(task=task, reason=reason)
    return out


class StatusServer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, read: Callable[[], status_pb2.GetStatusResponse]) -> None:
        self._read = read

    async def GetStatus(self, request: status_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> status_pb2.GetStatusResponse:
        return self._read()
