"""Writes test/metrics/golden.tfevents with TensorBoard's own protobufs and record writer.

splint's writer (src/metrics/tfevents.ts) must reproduce these bytes exactly for the same events
(test/metrics/tfevents.test.ts). Needs `pip install tensorboard` (checked with 2.21.0). Run from the
repository root:  python tools/tfevents/make_golden.py
"""
import io
import os

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

OUT = os.path.join("test", "metrics", "golden.tfevents")

# The same events as GOLDEN_EVENTS in the test: wall times fixed so the bytes are reproducible.
events = [
    event_pb2.Event(wall_time=1700000000.25, file_version="brain.Event:2"),
    event_pb2.Event(wall_time=1700000001.5, step=1, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="train/loss", simple_value=2.5),
        summary_pb2.Summary.Value(tag="train/learning_rate", simple_value=2e-4),
    ])),
    event_pb2.Event(wall_time=1700000002.75, step=300, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="eval/accuracy", simple_value=0.4375),
    ])),
    event_pb2.Event(wall_time=1700000003.0, step=200, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)),
]

buf = io.BytesIO()
writer = RecordWriter(buf)
for e in events:
    writer.write(e.SerializeToString())
with open(OUT, "wb") as f:
    f.write(buf.getvalue())
print(f"wrote {OUT}: {len(buf.getvalue())} bytes, {len(events)} events")
