from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyProblem(_message.Message):
    __slots__ = ("file", "resource", "field", "reason")
    FILE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    file: str
    resource: str
    field: str
    reason: str
    def __init__(self, file: _Optional[str] = ..., resource: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TranslationProblem(_message.Message):
    __slots__ = ("service", "reason")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    service: str
    reason: str
    def __init__(self, service: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TaskProblem(_message.Message):
    __slots__ = ("task", "reason")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task: str
    reason: str
    def __init__(self, task: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("istio_dir", "rejected", "warnings", "translation_failures", "failing_tasks")
    ISTIO_DIR_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILING_TASKS_FIELD_NUMBER: _ClassVar[int]
    istio_dir: str
    rejected: _containers.RepeatedCompositeFieldContainer[PolicyProblem]
    warnings: _containers.RepeatedCompositeFieldContainer[PolicyProblem]
    translation_failures: _containers.RepeatedCompositeFieldContainer[TranslationProblem]
    failing_tasks: _containers.RepeatedCompositeFieldContainer[TaskProblem]
    def __init__(self, istio_dir: _Optional[str] = ..., rejected: _Optional[_Iterable[_Union[PolicyProblem, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[PolicyProblem, _Mapping]]] = ..., translation_failures: _Optional[_Iterable[_Union[TranslationProblem, _Mapping]]] = ..., failing_tasks: _Optional[_Iterable[_Union[TaskProblem, _Mapping]]] = ...) -> None: ...
