from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_DENIED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_DENIED: Outcome
OUTCOME_FAILED: Outcome

class AuditQuery(_message.Message):
    __slots__ = ("since_unix_ms", "until_unix_ms", "actor", "action", "outcome", "after_seq", "limit", "descending")
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    since_unix_ms: int
    until_unix_ms: int
    actor: str
    action: str
    outcome: Outcome
    after_seq: int
    limit: int
    descending: bool
    def __init__(self, since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ..., descending: _Optional[bool] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("seq", "time_unix_us", "actor", "role", "client", "action", "target", "params_json", "outcome", "error", "prev_hash", "hash", "node")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_US_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_unix_us: int
    actor: str
    role: str
    client: str
    action: str
    target: str
    params_json: str
    outcome: Outcome
    error: str
    prev_hash: str
    hash: str
    node: str
    def __init__(self, seq: _Optional[int] = ..., time_unix_us: _Optional[int] = ..., actor: _Optional[str] = ..., role: _Optional[str] = ..., client: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., params_json: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., error: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("ok", "records", "head_hash", "first_broken_seq", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    FIRST_BROKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    records: int
    head_hash: str
    first_broken_seq: int
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., records: _Optional[int] = ..., head_hash: _Optional[str] = ..., first_broken_seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
