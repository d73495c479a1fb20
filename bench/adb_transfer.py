"""Benchmark: pushing to an emulated phone over ADB, and the overhead of one cached run.

1. Push throughput: the same bytes pushed with adb-shell (sync SEND) to an emulated phone,
   against a plain socket copy of the same bytes over loopback, side by side, a few rounds.
2. Run overhead: one cached run of a small model on the emulated phone (connect, push inputs,
   execute, pull outputs, clean up) in ms, beside the model's own median latency.

Usage: python bench/adb_transfer.py [--mb 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness.backends import get_backend
from harness.bench import Protocol, compute_reference, make_model_inputs, measure
from harness.devices.adb import AdbDevice
from harness.devices.emulator import EmulatedPhone
from harness.examples import write_example
from harness.modelio import load


def socket_copy(path: Path) -> float:
    """Seconds to send the file over a loopback TCP socket to a reader that writes it to disk."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    dest = path.with_suffix(".copy")

    def receive() -> None:
        conn, _ = server.accept()
        with conn, open(dest, "wb") as out:
            while chunk := conn.recv(1 << 20):
                out.write(chunk)

    reader = threading.Thread(target=receive)
    reader.start()
    start = time.perf_counter()
    with socket.create_connection(server.getsockname()) as client, open(path, "rb") as src:
        client.sendfile(src)
    reader.join()
    elapsed = time.perf_counter() - start
    server.close()
    dest.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmulatedPhone("dimensity-9200") as phone:
        blob = Path(tmp) / "blob.bin"
        blob.write_bytes(os.urandom(args.mb * 1024 * 1024))
        device = AdbDevice.open(f"tcp:127.0.0.1:{phone.port}")
        adb_s, sock_s = [], []
        for i in range(args.rounds):
            start = time.perf_counter()
            device.push(blob, f"/data/local/tmp/edgefarm/bench/blob{i}")
            adb_s.append(time.perf_counter() - start)
            sock_s.append(socket_copy(blob))
        adb_mbs = args.mb / statistics.median(adb_s)
        sock_mbs = args.mb / statistics.median(sock_s)
        print(f"push {args.mb} MB, median of {args.rounds} rounds")
        print(f"  adb push to emulated phone: {adb_mbs:8.1f} MB/s")
        print(f"  plain loopback socket copy: {sock_mbs:8.1f} MB/s")
        print(f"  ratio adb/socket:           {adb_mbs / sock_mbs:8.3f}")
        device.remove("/data/local/tmp/edgefarm/bench")

        path = write_example("ds-cnn", tmp)
        model = load(path)
        inputs = make_model_inputs(model, seed=0)
        reference = compute_reference(model, inputs)
        backend = get_backend("tvm-cpu")
        protocol = Protocol(warmup=1, min_iterations=1, min_seconds=0.0, max_seconds=1.0)
        measure(model, device, backend, inputs=inputs, reference=reference, protocol=protocol)
        walls = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            doc = measure(
                model, device, backend, inputs=inputs, reference=reference, protocol=protocol
            ).dump()
            walls.append((time.perf_counter() - start) * 1000.0)
            assert doc["status"] == "ok", doc["error"]
            in_runner = doc["load_ms"] + doc["first_ms"] + sum(doc["samples_ms"])
        full = measure(
            model,
            device,
            backend,
            inputs=inputs,
            reference=reference,
            protocol=Protocol(min_seconds=1.0),
        ).dump()
        wall = statistics.median(walls)
        print("one cached run of ds-cnn on the emulated phone (tvm-cpu, 2 calls)")
        print(f"  wall time of the run:         {wall:8.1f} ms")
        print(f"  of which inside the runner:   {in_runner:8.1f} ms (load + 2 calls)")
        print(
            f"  overhead (ADB, deploy check, state, push/pull, compare): {wall - in_runner:8.1f} ms"
        )
        print(f"  the model's median latency:   {full['latency_ms']['median']:8.3f} ms")
        device.close()


if __name__ == "__main__":
    main()
