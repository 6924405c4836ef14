"""utils.tensorboard: event files that TensorBoard's own protobuf definitions read."""
import struct

import pytest

from utils.tensorboard import ScalarWriter, crc32c, masked_crc


def test_crc32c_check_value():
    assert crc32c(b'123456789') == 0xE3069283          # the standard CRC-32C check value
    assert crc32c(b'') == 0


def test_events_decode_with_the_official_protos(tmp_path):
    event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')
    writer = ScalarWriter(tmp_path)
    writer.add_scalar('loss', 0.25, 3)
    writer.add_scalar('psnr', 31.5, 4)
    data = writer.path.read_bytes()
    events, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack('<Q', data[pos:pos + 8])
        assert struct.unpack('<I', data[pos + 8:pos + 12])[0] == masked_crc(data[pos:pos + 8])
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack('<I', data[pos + 12 + length:pos + 16 + length])[0] == masked_crc(body)
        events.append(event_pb2.Event.FromString(body))
        pos += 16 + length
    assert events[0].file_version == 'brain.Event:2'
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    assert scalars == [(3, 'loss', 0.25), (4, 'psnr', 31.5)]
    assert 'tfevents' in writer.path.name
