"""Starcite's Python SDK: sessions, producers that recover by themselves, and tails that resume
exactly where they stopped."""

from .client import Client, LifecycleEntry, LifecycleEvent, SessionListing
from .errors import (
    ExpectedSeqConflict,
    ExpectedVersionConflict,
    Forbidden,
    InvalidEvent,
    NotFound,
    ProducerSeqConflict,
    SessionExists,
    StarciteError,
    Unauthorized,
)
from .models import SessionPage
from .producer import Ack, Producer
from .session import EventPage, Gap, Session, SessionInfo, TailEvent

__all__ = [
    "Ack",
    "Client",
    "EventPage",
    "ExpectedSeqConflict",
    "ExpectedVersionConflict",
    "Forbidden",
    "Gap",
    "InvalidEvent",
    "LifecycleEntry",
    "LifecycleEvent",
    "NotFound",
    "Producer",
    "ProducerSeqConflict",
    "Session",
    "SessionExists",
    "SessionInfo",
    "SessionListing",
    "SessionPage",
    "StarciteError",
    "TailEvent",
    "Unauthorized",
]
