"""Session recording (docs/design.md §10): the `.wsrec` append-only msgpack format, its writer and reader."""

from worldsim.record.format import FORMAT_VERSION, RecordingError
from worldsim.record.reader import Record, Recording, RecordingReader, iter_records, read_recording
from worldsim.record.writer import RecordingWriter

__all__ = [
    "FORMAT_VERSION",
    "Record",
    "Recording",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "iter_records",
    "read_recording",
]
