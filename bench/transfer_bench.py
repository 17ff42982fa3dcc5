"""`make bench`: the video copy's throughput and peak memory against boto3's `upload_fileobj`.

One run starts, each in its own process so that none of their memory or CPU is counted as
the copy's:

* a moto server (S3 and the rest of the template, made by `infra.template.Stack`, so the
  videos bucket has the template's versioning, default encryption and lifecycle rule);
* a loopback HTTP source (`testkit.video_source.VideoServer`) serving a synthetic,
  structurally valid MP4 of any size, made on the fly and never held
  (`testkit.media.streamed_mp4`: `ftyp` and a `moov` with one video track, then one `mdat`
  filled from a fixed pseudo-random block; Content-Length, ETag and Range/If-Range
  honoured). The `moov`'s sample tables are empty; the streaming check does not read them;
* then every measured case in a fresh child process, whose peak RSS is its own
  (`wait4`'s ru_maxrss, cross-checked with VmHWM and a 10 ms VmRSS sampler):

  - `videohook` copies of a small (64 MiB) and a large (1 GiB) video with the
    TransferFunction's settings from template.yaml (16 MiB parts, 4 in flight), through
    `VideoCopier.copy` and the production S3 client (`videohook.aws.client`);
  - the baseline: the same large video's bytes, written to a temporary file first, uploaded
    with `upload_fileobj` (default TransferConfig) by the same production client.

Targets (from the issue): copy throughput >= 0.9 x the baseline's; peak RSS <= 160 MiB with
the default part size and concurrency; peak RSS of the large and the small copy within
16 MiB. The table is always printed; the exit status is 1 when a target is missed.

    python -m bench.transfer_bench                 # 1 GiB (a few minutes on 2 cores)
    python -m bench.transfer_bench --quick         # 256 MiB
    python -m bench.transfer_bench --size-mib 512 --rounds 3 --part-mib 8 --concurrency 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the measured children load none of it
    from testkit.video_source import Generated

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# The mdat filler: a pseudo-random block of odd length, so consecutive parts differ.
BLOCK_BYTES = MIB + 4093
SEED = 20240611
WRITE_BYTES = MIB
RESULT_TAG = "BENCH-RESULT "

TARGET_RATIO = 0.9
TARGET_PEAK_MIB = 160
TARGET_SPREAD_MIB = 16
DEFAULT_SIZE_MIB = 1024
QUICK_SIZE_MIB = 256
SMALL_SIZE_MIB = 64


# --- the synthetic video and its source (a child process) -----------------------------------


def synthetic_video(size: int) -> Generated:
    """`size` bytes of valid MP4 structure: a small movie header, then one big mdat."""
    from testkit.media import mdat_header, movie_head, streamed_mp4

    block = random.Random(SEED).randbytes(BLOCK_BYTES)
    media = size - len(movie_head()) - len(mdat_header(size))
    if media <= 0:
        raise ValueError(f"a synthetic MP4 needs more than {size - media} bytes")
    video = streamed_mp4(media, lambda: block, seconds=max(1, size // MIB))
    assert video.size == size
    return video


def serve_source(sizes: list[int]) -> None:
    """A loopback source serving /video-<bytes>.mp4 for each size; prints its port, then serves."""
    from testkit.video_source import VideoServer

    with VideoServer(write_bytes=WRITE_BYTES) as server:
        for size in sizes:
            server.add(f"/video-{size}.mp4", synthetic_video(size))
        print(server.base_url.rsplit(":", 1)[1], flush=True)
        threading.Event().wait()


# --- measured children ---------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class _RssSampler:
    """The highest VmRSS seen every 10 ms while the measured work runs."""

    def __init__(self) -> None:
        self.peak_kib = _status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))


def _instrument(s3: Any) -> dict[str, Any]:
    """Time CompleteMultipartUpload (moto assembles the whole object inside it) and count retries."""
    stats: dict[str, Any] = {"complete_s": 0.0, "retries": 0, "calls": 0}
    started: dict[int, float] = {}

    def before(**_: Any) -> None:
        started[threading.get_ident()] = time.perf_counter()

    def after(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        stats["calls"] += 1
        stats["retries"] += parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if model.name == "CompleteMultipartUpload":
            stats["complete_s"] += time.perf_counter() - started.pop(
                threading.get_ident(), time.perf_counter()
            )

    s3.meta.events.register("before-call.s3.CompleteMultipartUpload", before)
    s3.meta.events.register("after-call.s3", after)
    return stats


def _production_client(aws: Any) -> Any:
    """The production S3 client (videohook.aws); `--unsigned-payload` first tries the proposed config."""
    if os.environ.get("BENCH_UNSIGNED_PAYLOAD"):
        from botocore.config import Config

        s3_options = {**(aws.CLIENT_CONFIG.s3 or {}), "payload_signing_enabled": False}
        aws.CLIENT_CONFIG = aws.CLIENT_CONFIG.merge(Config(s3=s3_options))
    return aws.client("s3")


def _emit(result: dict[str, Any]) -> None:
    result["rss_after_kib"] = _status_kib("VmRSS")
    result["vmhwm_kib"] = _status_kib("VmHWM")
    result["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1: Python's own allocations, for diagnosis
        result["traced_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
    print(RESULT_TAG + json.dumps(result), flush=True)


def child_copy(url: str, task_id: str) -> None:
    """One production copy: the TransferFunction's settings (from the environment) and client."""
    from videohook import aws, config
    from videohook.copier import VideoCopier
    from videohook.source import SourceSession

    settings = config.load_settings()
    s3 = _production_client(aws)
    stats = _instrument(s3)
    copier = VideoCopier(
        s3,
        settings.videos_bucket,
        part_bytes=settings.transfer_part_bytes,
        concurrency=settings.transfer_concurrency,
        max_bytes=settings.max_video_bytes,
    )
    rss_before = _status_kib("VmRSS")
    with SourceSession(settings.source_policy) as source, _RssSampler() as sampler:
        started = time.perf_counter()
        result = copier.copy(task_id, url, source, lambda done, total: None)
        seconds = time.perf_counter() - started
    head = s3.head_object(Bucket=result.bucket, Key=result.key, VersionId=result.version_id)
    _emit(
        {
            "seconds": seconds,
            "bytes": result.size,
            "stored_bytes": head["ContentLength"],
            "sha256": result.sha256,
            "bucket": result.bucket,
            "key": result.key,
            "version_id": result.version_id,
            "encryption": head.get("ServerSideEncryption"),
            "duration_s": result.duration_seconds,
            "frame": f"{result.width}x{result.height}",
            "part_bytes": settings.transfer_part_bytes,
            "concurrency": settings.transfer_concurrency,
            "rss_before_kib": rss_before,
            "sampled_peak_kib": sampler.peak_kib,
            **stats,
        }
    )


def child_baseline(path: str, key: str) -> None:
    """boto3's own managed upload of the same bytes from a file, default TransferConfig."""
    from videohook import aws, config

    settings = config.load_settings()
    s3 = _production_client(aws)
    stats = _instrument(s3)
    rss_before = _status_kib("VmRSS")
    with _RssSampler() as sampler:
        started = time.perf_counter()
        with open(path, "rb") as handle:
            s3.upload_fileobj(handle, settings.videos_bucket, key)
        seconds = time.perf_counter() - started
    head = s3.head_object(Bucket=settings.videos_bucket, Key=key)
    _emit(
        {
            "seconds": seconds,
            "bytes": os.path.getsize(path),
            "stored_bytes": head["ContentLength"],
            "bucket": settings.videos_bucket,
            "key": key,
            "version_id": head.get("VersionId"),
            "encryption": head.get("ServerSideEncryption"),
            "rss_before_kib": rss_before,
            "sampled_peak_kib": sampler.peak_kib,
            **stats,
        }
    )


# --- the orchestrating parent ----------------------------------------------------------------


class BenchError(Exception):
    pass


@dataclass
class Case:
    name: str
    size: int
    seconds: float
    peak_kib: int  # wait4 ru_maxrss of the child
    child: dict[str, Any]
    cpu_seconds: float  # the child's own user + system time
    moto_cpu: float
    source_cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1, so the moto server speaks https like S3 does."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "moto-cert.pem", workdir / "moto-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _wait_for_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"nothing listens on port {port} after {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[Any] | None) -> resource.struct_rusage | None:
    """Terminate a server this run started; its rusage (peak RSS) when it could be reaped here."""
    if proc is None or proc.returncode is not None:
        return None
    proc.terminate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, sizes: list[int]) -> None:
        self.args = args
        self.sizes = sizes
        self.workdir = workdir
        self.moto: subprocess.Popen[Any] | None = None
        self.source: subprocess.Popen[Any] | None = None
        self.moto_usage: resource.struct_rusage | None = None
        self.env: dict[str, str] = {}
        self.transfer_env: dict[str, str] = {}
        self.source_url = ""
        self.bucket = ""
        self.s3: Any = None

    # servers

    def start(self) -> None:
        port = _free_port()
        tls = not self.args.http
        endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        moto_argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONPATH=os.pathsep.join([str(ROOT / "handler"), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        if tls:
            cert, key = _self_signed_cert(self.workdir)
            moto_argv += ["-c", str(cert), "-k", str(key)]
            env["AWS_CA_BUNDLE"] = str(cert)  # the clients keep their config and verify the certificate
        self.env = env
        # Parts and objects held in memory, not spooled to temporary files: moto's own speed is not
        # what is measured, and it only adds the same time to both sides (its memory is not counted).
        moto_env = {**env, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(8 * 1024 * MIB)}
        moto_log = self.workdir / "moto.log"
        self.moto = subprocess.Popen(
            moto_argv,
            stdout=moto_log.open("w"),
            stderr=subprocess.STDOUT,
            env=moto_env,
            cwd=self.workdir,
        )
        source_log = self.workdir / "source.log"
        sizes = [str(size) for size in self.sizes]
        self.source = subprocess.Popen(
            [sys.executable, "-m", "bench.transfer_bench", "_source", *sizes],
            stdout=subprocess.PIPE,
            stderr=source_log.open("w"),
            env=env,
            cwd=ROOT,
            text=True,
        )
        assert self.source.stdout is not None
        line = self.source.stdout.readline().strip()
        if not line.isdigit():
            raise BenchError(f"the source server did not start:\n{_tail(source_log)}")
        self.source_url = f"http://127.0.0.1:{line}"
        _wait_for_port(port, self.moto, moto_log)

        # The stack from template.yaml, on the moto server.
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        import boto3

        from infra.template import Stack

        session = boto3.session.Session()
        stack = Stack.from_file().create(session)
        self.bucket = stack.physical["VideosBucket"]
        self.s3 = session.client("s3")
        transfer_env = stack.function_environment("TransferFunction")
        transfer_env["VIDEO_SOURCE_ALLOW_PRIVATE"] = "true"
        if self.args.unsigned_payload:
            transfer_env["BENCH_UNSIGNED_PAYLOAD"] = "1"
        if self.args.part_mib:
            transfer_env["TRANSFER_PART_BYTES"] = str(self.args.part_mib * MIB)
        if self.args.concurrency:
            transfer_env["TRANSFER_CONCURRENCY"] = str(self.args.concurrency)
        self.transfer_env = transfer_env
        self.defaults = not self.args.part_mib and not self.args.concurrency
        versioning = self.s3.get_bucket_versioning(Bucket=self.bucket).get("Status")
        print(
            f"moto {endpoint}  source {self.source_url}  bucket {self.bucket} (versioning {versioning})  "
            f"parts {int(transfer_env['TRANSFER_PART_BYTES']) // MIB} MiB x "
            f"{transfer_env['TRANSFER_CONCURRENCY']} in flight",
            flush=True,
        )
        print(
            "clients: videohook.aws.client('s3') (CLIENT_CONFIG"
            + (" + s3 payload_signing_enabled=False: what-if)" if self.args.unsigned_payload else ")")
            + f"; baseline: upload_fileobj, default TransferConfig; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    def stop(self) -> None:
        _stop(self.source)
        self.moto_usage = _stop(self.moto)

    # cases

    def _child(self, name: str, argv: list[str], size: int) -> Case:
        assert self.moto is not None and self.source is not None
        log = self.workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
        moto_cpu, source_cpu = _cpu_seconds(self.moto.pid), _cpu_seconds(self.source.pid)
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.transfer_bench", *argv],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**self.env, **self.transfer_env},
                cwd=ROOT,
                text=True,
            )
            assert proc.stdout is not None
            out = proc.stdout.read()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        moto_cpu = _cpu_seconds(self.moto.pid) - moto_cpu
        source_cpu = _cpu_seconds(self.source.pid) - source_cpu
        results = [line[len(RESULT_TAG) :] for line in out.splitlines() if line.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not results:
            raise BenchError(f"{name} failed (exit {proc.returncode}):\n{out[-2000:]}\n{_tail(log)}")
        child = json.loads(results[-1])
        if child["stored_bytes"] != size or child["bytes"] != size:
            raise BenchError(f"{name}: {child['stored_bytes']} bytes stored, {size} expected")
        try:  # free moto's copy (a versioned bucket: delete the version itself)
            self.s3.delete_object(Bucket=child["bucket"], Key=child["key"], VersionId=child["version_id"])
        except Exception as exc:
            print(f"  (could not delete {child['key']}: {exc})", file=sys.stderr)
        case = Case(
            name=name,
            size=size,
            seconds=child["seconds"],
            peak_kib=usage.ru_maxrss,
            child=child,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            moto_cpu=moto_cpu,
            source_cpu=source_cpu,
        )
        print(
            f"  {name:<34} {case.mib_s:7.1f} MiB/s  peak RSS {case.peak_kib / 1024:6.1f} MiB  "
            f"({case.seconds:.1f} s)"
            + (
                f"  traced peak {child['traced_peak_kib'] / 1024:.1f} MiB"
                if "traced_peak_kib" in child
                else ""
            ),
            flush=True,
        )
        return case

    def copy(self, size: int, label: str, expected_sha256: str) -> Case:
        url = f"{self.source_url}/video-{size}.mp4?token=bench"
        case = self._child(
            f"videohook copy {label}",
            ["_copy", "--url", url, "--task-id", f"bench-{size}-{time.time_ns()}"],
            size,
        )
        if case.child["sha256"] != expected_sha256:
            raise BenchError(f"videohook copy {label}: sha256 differs from the source's bytes")
        return case

    def baseline(self, path: Path, size: int, label: str) -> Case:
        key = f"baseline/bench-{size}-{time.time_ns()}.mp4"
        return self._child(
            f"boto3 upload_fileobj {label}", ["_baseline", "--file", str(path), "--key", key], size
        )


def _write_video(size: int, path: Path | None) -> str:
    """The synthetic video's sha256, writing it to `path` on the way when given."""
    digest = hashlib.sha256()
    handle = path.open("wb") if path is not None else None
    try:
        for chunk in synthetic_video(size).chunks(0):
            digest.update(chunk)
            if handle is not None:
                handle.write(chunk)
    finally:
        if handle is not None:
            handle.close()
    return digest.hexdigest()


def _best(cases: list[Case]) -> Case:
    """Fastest round's time, with the highest peak RSS of all rounds."""
    best = max(cases, key=lambda c: c.mib_s)
    worst_rss = max(c.peak_kib for c in cases)
    return Case(**{**best.__dict__, "peak_kib": worst_rss})


def _report(bench: Bench, small: list[Case], large: list[Case], base: list[Case]) -> bool:
    rows = [_best(small), _best(large), _best(base)]
    rounds = len(large)
    print()
    title = "transfer bench" + (f" (best of {rounds} rounds; peak RSS = highest round)" if rounds > 1 else "")
    print(title)
    header = (
        f"{'case':<34} {'MiB':>6} {'s':>7} {'MiB/s':>7} {'peak RSS':>9} {'before':>7} "
        f"{'copy +':>7} {'VmHWM':>7} {'sampled':>8} {'cpu s':>6} {'moto s':>7} {'src s':>6} {'compl s':>7} "
        f"{'retry':>5}"
    )
    print(header)
    print("-" * len(header))
    for c in rows:
        before = c.child["rss_before_kib"] / 1024
        print(
            f"{c.name:<34} {c.size / MIB:6.0f} {c.seconds:7.2f} {c.mib_s:7.1f} {c.peak_kib / 1024:9.1f} "
            f"{before:7.1f} {c.peak_kib / 1024 - before:7.1f} {c.child['vmhwm_kib'] / 1024:7.1f} "
            f"{c.child['sampled_peak_kib'] / 1024:8.1f} {c.cpu_seconds:6.1f} {c.moto_cpu:7.1f} {c.source_cpu:6.1f} "
            f"{c.child['complete_s']:7.2f} {c.child['retries']:5d}"
        )
    print(
        "(RSS in MiB: peak = wait4 ru_maxrss of the child; before = VmRSS after imports and client, "
        "before the transfer;\n copy + = peak - before; cpu s = the child's user+system time; "
        "moto s / src s = the servers' CPU time during the case;\n compl s = time inside "
        "CompleteMultipartUpload (included in s); retry = botocore retries)"
    )
    if any(c.child["retries"] for c in small + large + base):
        print("WARNING: botocore retried calls; the times include the retries (see the moto log with --keep)")
    info = rows[1].child
    print(
        f"video check: {info['duration_s']} s, {info['frame']}; stored with {info['encryption']}; "
        f"sha256 matches the source"
    )
    if bench.moto_usage is not None:
        print(f"moto server peak RSS {bench.moto_usage.ru_maxrss / 1024:.0f} MiB (not counted)")

    small_c, large_c, base_c = rows
    ratio = large_c.mib_s / base_c.mib_s
    peak = large_c.peak_kib / 1024
    spread = (large_c.peak_kib - small_c.peak_kib) / 1024
    defaults = bench.defaults
    checks = [
        (
            f"throughput ratio videohook / upload_fileobj = {ratio:.2f}",
            f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
        ),
        (
            f"peak RSS of the {large_c.size // MIB} MiB copy = {peak:.1f} MiB"
            + ("" if defaults else " (non-default part size/concurrency: informational)"),
            f"<= {TARGET_PEAK_MIB} MiB",
            peak <= TARGET_PEAK_MIB or not defaults,
        ),
        (
            f"peak RSS {large_c.size // MIB} MiB - {small_c.size // MIB} MiB copy = {spread:+.1f} MiB",
            f"within {TARGET_SPREAD_MIB} MiB",
            abs(spread) <= TARGET_SPREAD_MIB,
        ),
    ]
    print()
    for text, target, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}  (target {target})")
    return all(ok for _, _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--size-mib", type=int, default=None, help=f"large video (default {DEFAULT_SIZE_MIB})"
    )
    parser.add_argument("--quick", action="store_true", help=f"large video of {QUICK_SIZE_MIB} MiB")
    parser.add_argument("--small-mib", type=int, default=SMALL_SIZE_MIB, help="small video (default 64)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="repeat each case, best time reported (default 3; --quick 1)"
    )
    parser.add_argument("--part-mib", type=int, default=0, help="override TRANSFER_PART_BYTES")
    parser.add_argument("--concurrency", type=int, default=0, help="override TRANSFER_CONCURRENCY")
    parser.add_argument(
        "--http",
        action="store_true",
        help="plain-http moto (botocore then signs every payload, the baseline's too)",
    )
    parser.add_argument(
        "--unsigned-payload",
        action="store_true",
        help="what-if: the clients with s3 payload_signing_enabled=False (no SHA-256 of every part)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    size_mib = args.size_mib or (QUICK_SIZE_MIB if args.quick else DEFAULT_SIZE_MIB)
    large, small = size_mib * MIB, args.small_mib * MIB
    rounds = args.rounds or (1 if args.quick else 3)

    workdir = Path(tempfile.mkdtemp(prefix="videohook-bench-"))
    bench = Bench(args, workdir, [small, large])
    ok = False
    try:
        bench.start()
        print(f"writing the {size_mib} MiB baseline file ...", flush=True)
        video_file = workdir / "video.mp4"
        large_sha = _write_video(large, video_file)
        small_sha = _write_video(small, None)
        small_cases, large_cases, base_cases = [], [], []
        for _ in range(rounds):
            small_cases.append(bench.copy(small, f"{args.small_mib} MiB", small_sha))
            large_cases.append(bench.copy(large, f"{size_mib} MiB", large_sha))
            base_cases.append(bench.baseline(video_file, large, f"{size_mib} MiB"))
        bench.stop()
        ok = _report(bench, small_cases, large_cases, base_cases)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
    finally:
        bench.stop()
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_source":
        serve_source([int(size) for size in sys.argv[2:]])
    elif len(sys.argv) > 1 and sys.argv[1] in ("_copy", "_baseline"):
        child = argparse.ArgumentParser()
        child.add_argument("mode")
        child.add_argument("--url")
        child.add_argument("--task-id")
        child.add_argument("--file")
        child.add_argument("--key")
        opts = child.parse_args()
        if opts.mode == "_copy":
            child_copy(opts.url, opts.task_id)
        else:
            child_baseline(opts.file, opts.key)
    else:
        sys.exit(main())
