"""The wire protocol: types, the canonical encoder, the tolerant decoder, the error table."""
from simsync.errors import ProtocolError
from simsync.protocol.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    response_wire,
)
from simsync.protocol.server_errors import (
    FATAL_ERRORS,
    NON_FATAL_ERRORS,
    RETRYABLE_ON_ATTACH,
    ServerError,
)
from simsync.protocol.types import *  # noqa: F401,F403
from simsync.protocol.types import __all__ as _types_all

__all__ = ["FATAL_ERRORS", "NON_FATAL_ERRORS", "RETRYABLE_ON_ATTACH", "ProtocolError",
           "ServerError", "decode_request", "decode_response", "encode_request",
           "encode_response", "response_wire", *_types_all]
