"""TensorBoard scalars written directly, without tensorboardX: synchronous, no threads.

An event file is a sequence of TFRecords, each an ``Event`` protocol buffer::

    uint64 length | uint32 masked_crc32c(length) | Event bytes | uint32 masked_crc32c(bytes)

(little-endian). The first event carries ``file_version = "brain.Event:2"``; each scalar
is ``Event(wall_time, step, summary=Summary(value=[Value(tag, simple_value)]))``. The
few protobuf fields are encoded here by hand (field numbers from TensorBoard's
``event.proto`` / ``summary.proto``), so TensorBoard logging works wherever the project
runs, with or without tensorboardX.

Each record is appended with one ``write``; a write that fails (full disk) is cut back
off the file, so the file never ends in half a record.
"""
import os
import socket
import struct
import time
from pathlib import Path

from utils.files import append_whole

FILE_VERSION = b'brain.Event:2'


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)   # Castagnoli, reflected
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of ``data``; ``crc32c(b'123456789') == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data):
    """``data`` framed as one TFRecord."""
    length = struct.pack('<Q', len(data))
    return (length + struct.pack('<I', masked_crc(length)) + data
            + struct.pack('<I', masked_crc(data)))


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire_type):
    return _varint(field << 3 | wire_type)


def _bytes_field(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def event(wall_time, step=0, file_version=None, tag=None, value=None):
    """The bytes of an ``Event``: ``wall_time`` (field 1, double), ``step`` (2, int64),
    ``file_version`` (3, string) or a one-scalar ``summary`` (5) with ``tag`` (Value
    field 1) and ``simple_value`` (Value field 2, float32)."""
    out = _key(1, 1) + struct.pack('<d', wall_time)
    if step:
        out += _key(2, 0) + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        out += _bytes_field(3, file_version)
    if tag is not None:
        scalar = _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack('<f', value)
        out += _bytes_field(5, _bytes_field(1, scalar))
    return out


class ScalarWriter:
    """Appends scalars to a new event file in ``folder`` (made if needed)."""

    def __init__(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = folder / f'events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}'
        self._append(event(now, file_version=FILE_VERSION))

    def add_scalar(self, tag, value, step):
        self._append(event(time.time(), int(step), tag=tag, value=float(value)))

    def _append(self, data):
        append_whole(self.path, record(data))
