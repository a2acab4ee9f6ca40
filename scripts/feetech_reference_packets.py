#!/usr/bin/env python3
"""Generates reference Feetech instruction packets with the official SDK (`feetech-servo-sdk`,
module `scservo_sdk`) for lapa's byte-exact driver tests.

    python3 -m venv /tmp/ft && /tmp/ft/bin/pip install feetech-servo-sdk pyserial
    /tmp/ft/bin/python scripts/feetech_reference_packets.py > firmware-bridge/tests/data/feetech_sdk_packets.json

A fake port records what the SDK writes; nothing touches hardware. Each entry is a call and the
exact bytes the SDK put on the wire.
"""
import json

import scservo_sdk as sdk


class RecordingPort(sdk.PortHandler):
    def __init__(self):
        super().__init__("/dev/null")
        self.written = []
        self.is_open = True

    def openPort(self):
        return True

    def clearPort(self):
        pass

    def writePort(self, packet):
        self.written.append(list(packet))
        return len(packet)

    def readPort(self, length):
        return []

    def getBytesAvailable(self):
        return 0

    def isPacketTimeout(self):
        return True


def capture(name, fn):
    port = RecordingPort()
    ph = sdk.PacketHandler(0)  # STS series: little-endian words
    fn(port, ph)
    return {"call": name, "bytes": port.written[0]}


def sync_write(port, ph):
    g = sdk.GroupSyncWrite(port, ph, 42, 2)
    for sid, pos in zip(range(1, 7), [2048, 1000, 3000, 0, 4095, 1234]):
        g.addParam(sid, [pos & 0xFF, pos >> 8])
    g.txPacket()


def sync_read(port, ph):
    g = sdk.GroupSyncRead(port, ph, 56, 2)
    for sid in range(1, 7):
        g.addParam(sid)
    g.txPacket()


cases = [
    capture("ping(1)", lambda p, h: h.ping(p, 1)),
    capture("ping(6)", lambda p, h: h.ping(p, 6)),
    capture("read(1, 56, 2)", lambda p, h: h.readTx(p, 1, 56, 2)),
    capture("read(3, 60, 8)", lambda p, h: h.readTx(p, 3, 60, 8)),
    capture("write1(1, 40, 1)", lambda p, h: h.write1ByteTxOnly(p, 1, 40, 1)),
    capture("write2(2, 42, 2048)", lambda p, h: h.write2ByteTxOnly(p, 2, 42, 2048)),
    capture("write2(5, 31, 2047)", lambda p, h: h.write2ByteTxOnly(p, 5, 31, 2047)),
    capture("reg_write2(4, 42, 100)", lambda p, h: h.regWriteTxOnly(p, 4, 42, 2, [100, 0])),
    capture("action(254)", lambda p, h: h.action(p, 254)),
    capture("sync_write(42, 2, ids 1-6)", sync_write),
    capture("sync_read(56, 2, ids 1-6)", sync_read),
]
print(json.dumps({"generator": "feetech-servo-sdk 1.0.0 (scservo_sdk), PacketHandler(0)", "packets": cases}, indent=1))
