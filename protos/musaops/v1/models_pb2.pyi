from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STAGE_UNSPECIFIED: _ClassVar[TransferStage]
    TRANSFER_STAGE_RECEIVING: _ClassVar[TransferStage]
    TRANSFER_STAGE_VERIFYING: _ClassVar[TransferStage]
    TRANSFER_STAGE_DONE: _ClassVar[TransferStage]
TRANSFER_STAGE_UNSPECIFIED: TransferStage
TRANSFER_STAGE_RECEIVING: TransferStage
TRANSFER_STAGE_VERIFYING: TransferStage
TRANSFER_STAGE_DONE: TransferStage

class FileEntry(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ModelManifest(_message.Message):
    __slots__ = ("name", "files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    def __init__(self, name: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ...) -> None: ...

class FileData(_message.Message):
    __slots__ = ("path", "offset", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelManifest
    data: FileData
    def __init__(self, header: _Optional[_Union[ModelManifest, _Mapping]] = ..., data: _Optional[_Union[FileData, _Mapping]] = ...) -> None: ...

class FileOffset(_message.Message):
    __slots__ = ("path", "offset")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ImportStatusResponse(_message.Message):
    __slots__ = ("present", "free_bytes", "reserve_bytes", "exists")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESERVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    present: _containers.RepeatedCompositeFieldContainer[FileOffset]
    free_bytes: int
    reserve_bytes: int
    exists: bool
    def __init__(self, present: _Optional[_Iterable[_Union[FileOffset, _Mapping]]] = ..., free_bytes: _Optional[int] = ..., reserve_bytes: _Optional[int] = ..., exists: _Optional[bool] = ...) -> None: ...

class TransferProgress(_message.Message):
    __slots__ = ("stage", "bytes_done", "bytes_total", "rate_bytes_per_s", "file", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: TransferStage
    bytes_done: int
    bytes_total: int
    rate_bytes_per_s: float
    file: str
    message: str
    def __init__(self, stage: _Optional[_Union[TransferStage, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., rate_bytes_per_s: _Optional[float] = ..., file: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("model", "offsets", "manifest_only", "paths")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_ONLY_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    model: str
    offsets: _containers.RepeatedCompositeFieldContainer[FileOffset]
    manifest_only: bool
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., offsets: _Optional[_Iterable[_Union[FileOffset, _Mapping]]] = ..., manifest_only: _Optional[bool] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("manifest", "data")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    manifest: ModelManifest
    data: FileData
    def __init__(self, manifest: _Optional[_Union[ModelManifest, _Mapping]] = ..., data: _Optional[_Union[FileData, _Mapping]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("source", "model", "token", "tls")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    source: str
    model: str
    token: str
    tls: bool
    def __init__(self, source: _Optional[str] = ..., model: _Optional[str] = ..., token: _Optional[str] = ..., tls: _Optional[bool] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("freed_bytes",)
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    def __init__(self, freed_bytes: _Optional[int] = ...) -> None: ...
