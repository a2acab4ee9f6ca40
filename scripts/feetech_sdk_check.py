#!/usr/bin/env python3
"""The official Feetech SDK (`scservo_sdk` from `feetech-servo-sdk`) drives lapa's simulated
STS3215 bus exactly as it would a real USB-TTL adapter wired to six servos.

    python3 scripts/feetech_sdk_check.py target/debug/lapa-bridge

Starts `lapa-bridge sim --pty --mode feetech`, then pings, reads, writes and group-sync-reads
through the pty with the vendor SDK. Exits non-zero on any mismatch.
"""
import subprocess
import sys
import time

import scservo_sdk as sdk

ADDR_TORQUE, ADDR_GOAL, ADDR_PRESENT, ADDR_MODEL = 40, 42, 56, 3


def main(binary):
    sim = subprocess.Popen([binary, "sim", "--pty", "--mode", "feetech"], stdout=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/"), f"unexpected pty path {path!r}"
        port = sdk.PortHandler(path)
        assert port.openPort(), "openPort"
        assert port.setBaudRate(1_000_000), "setBaudRate"
        ph = sdk.PacketHandler(0)

        def ok(result, error, what):
            assert result == sdk.COMM_SUCCESS, f"{what}: {ph.getTxRxResult(result)}"
            assert error == 0, f"{what}: {ph.getRxPacketError(error)}"

        for sid in range(1, 7):
            model, result, error = ph.ping(port, sid)
            ok(result, error, f"ping {sid}")
            assert model == 777, f"servo {sid} model {model}"
            m2, result, error = ph.read2ByteTxRx(port, sid, ADDR_MODEL)
            ok(result, error, f"read model {sid}")
            assert m2 == 777
        _, result, _ = ph.ping(port, 9)
        assert result != sdk.COMM_SUCCESS, "a missing id must time out"

        goals = [1900, 2100, 2300, 1800, 2048, 1500]
        for sid, goal in zip(range(1, 7), goals):
            ok(*ph.write1ByteTxRx(port, sid, ADDR_TORQUE, 1), f"torque {sid}")
            ok(*ph.write2ByteTxRx(port, sid, ADDR_GOAL, goal), f"goal {sid}")
        torque, result, error = ph.read1ByteTxRx(port, 3, ADDR_TORQUE)
        ok(result, error, "read torque")
        assert torque == 1

        reader = sdk.GroupSyncRead(port, ph, ADDR_PRESENT, 2)
        for sid in range(1, 7):
            assert reader.addParam(sid)
        deadline = time.time() + 3
        while True:
            result = reader.txRxPacket()
            assert result == sdk.COMM_SUCCESS, f"sync read: {ph.getTxRxResult(result)}"
            present = [reader.getData(sid, ADDR_PRESENT, 2) for sid in range(1, 7)]
            if present == goals or time.time() > deadline:
                break
            time.sleep(0.05)
        assert present == goals, f"present {present} != goals {goals}"

        writer = sdk.GroupSyncWrite(port, ph, ADDR_GOAL, 2)
        for sid in range(1, 7):
            writer.addParam(sid, [0x00, 0x08])
        assert writer.txPacket() == sdk.COMM_SUCCESS
        time.sleep(0.5)
        pos, result, error = ph.read2ByteTxRx(port, 1, ADDR_PRESENT)
        ok(result, error, "read after sync write")
        assert pos == 2048, pos
        port.closePort()
        print(f"OK: scservo_sdk pinged, read, wrote, sync-read and sync-wrote six simulated STS3215 on {path}")
    finally:
        sim.kill()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/lapa-bridge")
