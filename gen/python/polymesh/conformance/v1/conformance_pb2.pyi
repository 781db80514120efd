from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Failure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_UNSPECIFIED: _ClassVar[Failure]
    FAILURE_INVALID_ARGUMENT: _ClassVar[Failure]
    FAILURE_NOT_FOUND: _ClassVar[Failure]
    FAILURE_UNEXPECTED: _ClassVar[Failure]
FAILURE_UNSPECIFIED: Failure
FAILURE_INVALID_ARGUMENT: Failure
FAILURE_NOT_FOUND: Failure
FAILURE_UNEXPECTED: Failure

class EchoRequest(_message.Message):
    __slots__ = ("message", "failure", "relay_to", "relay_metadata")
    class RelayMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    RELAY_TO_FIELD_NUMBER: _ClassVar[int]
    RELAY_METADATA_FIELD_NUMBER: _ClassVar[int]
    message: str
    failure: Failure
    relay_to: str
    relay_metadata: _containers.ScalarMap[str, str]
    def __init__(self, message: _Optional[str] = ..., failure: _Optional[_Union[Failure, str]] = ..., relay_to: _Optional[str] = ..., relay_metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("message", "instance_id", "language", "deadline_remaining_ms", "relayed", "trace_id", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    RELAYED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    message: str
    instance_id: str
    language: str
    deadline_remaining_ms: int
    relayed: EchoResponse
    trace_id: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, message: _Optional[str] = ..., instance_id: _Optional[str] = ..., language: _Optional[str] = ..., deadline_remaining_ms: _Optional[int] = ..., relayed: _Optional[_Union[EchoResponse, _Mapping]] = ..., trace_id: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EchoStreamRequest(_message.Message):
    __slots__ = ("message", "count", "failure")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    message: str
    count: int
    failure: Failure
    def __init__(self, message: _Optional[str] = ..., count: _Optional[int] = ..., failure: _Optional[_Union[Failure, str]] = ...) -> None: ...

class EchoStreamResponse(_message.Message):
    __slots__ = ("message", "index")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    message: str
    index: int
    def __init__(self, message: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...
