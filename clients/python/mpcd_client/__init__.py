"""Python client for mpcd, the model-predictive control daemon."""
from .client import Controller, MpcdError, MpcdTimeout
from .protocol import ActionReply, ErrorReply, ProtocolError

__all__ = ["Controller", "MpcdError", "MpcdTimeout", "ActionReply", "ErrorReply", "ProtocolError"]
__version__ = "0.1.0"
