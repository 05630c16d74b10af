"""Frame sampling: `vstar.video.sample_frames(path, num_frames=8)` against decoding everything, and against decord.

Run: `PYTHONPATH=src python bench/bench_video.py [--quick] [--repeats 7]`; the ratios are also written to
`bench/results.json` (keys `frame_sampling_10s`, `frame_sampling_60s` against the baseline below,
`frame_sampling_60s_per_cpu_s` the same on CPU time, `frame_sampling_60s[_per_cpu_s]_unheld` against the baseline
that does not hold its frames, `frame_sampling_60s_vs_decord`,
`frame_sampling_{10,60}s_vs_decode_wanted` against the stricter one, and `frame_sampling_ts_vs_decode_all` on an
MPEG-TS stream copy of the 60 s clip).

Every clip a video LLM trains or answers on is first cut down to a handful of frames, so sampling 8 exact,
evenly spaced frames is paid once per clip per pass. The clips are 1280 x 720 H.264 at 25 fps, 10 s and 60 s long,
encoded once into `bench/.cache/` by libx264 (`superfast` preset, which keeps B-frames, the encoder's default
keyframe interval of 250 frames, one slice per frame as most published video has) from a panning textured background
with a moving, changing box, so the stream holds the usual I/P/B frames rather than repeats of one frame. Three ways
to get the same 8 frames:

- baseline: decode every frame into an RGB array and index the wanted ones, the way `torchvision.io.read_video`
  or a list comprehension over `container.decode()` does (it holds every frame: 4 GB for the 60 s clip, which the
  kernel faults in anew on every call: 0.2 to 5 CPU-s of the baseline's 6.5 to 12, depending on the machine's
  memory state: the part of the baseline that varies most);
- baseline, unheld (60 s clip only): the same decoding and conversion of every frame, keeping only the wanted ones,
  so the page faults are left out of the comparison;
- decode wanted: PyAV decodes from the first frame but converts only the wanted frames, stopping after the last
  (the `read_video_pyav` helper of the transformers docs and LLaVA-style code): a stricter baseline;
- decord: `decord.VideoReader(path).get_batch(indices)`, the decoder LLaVA-style training code uses (skipped if
  decord is not installed: `pip install -e '.[bench]'`);
- vstar: `sample_frames`, which seeks to the keyframe before a target when that keyframe lies ahead, skips the
  frames nothing refers to on the way (and the reference frames no target depends on) and decodes keyframe runs in
  parallel (one decoder per core).

The MPEG-TS copy (`-c copy` into a transport stream, as broadcast and camcorder files are) has no index: a seek there
is a search over timestamps that can land after the keyframe asked for, so vstar checks every seek against its packet
index and seeks earlier when it landed late, decoding the runs one after another in one decoder.

An exact frame still needs every reference frame since the keyframe before it, so with keyframes 10 s apart vstar
decodes about 40% of the frames the baseline decodes on the 60 s clip, and about 60% on the 10 s clip (one keyframe:
only the frames nothing refers to are skipped); the gain grows as keyframes get closer.

All three must return the same frames (same indices, pixel content within a small tolerance; decord carries its
own FFmpeg build): the script stops with an error otherwise. Each call opens the file anew (opening and indexing
are part of the cost); the methods take turns in every repetition so load from other processes spreads over all
of them, and the median wall time per call is compared; the table gives each median with the range of the calls,
and the ratios of the calls made in the same repetition are printed too (their range is how far one measurement
strays). The CPU column is the process's CPU time over all its threads: when it exceeds the wall time, threads ran
in parallel, and on a busy machine wall times are noisy.

vstar's CPU time is almost all decoding: of the 60 s clip's 1,500 frames, the reference frames from the keyframe
before each target (about 557 with the targets, ~3.9 ms each in one thread), of which some 150 reference B-frames
(x264's B-pyramid) that no target depends on go to the decoder as slice headers only (`vstar.h264`: the decoder's
reference bookkeeping stays exact; leaving them out altogether makes FFmpeg fill the gap in frame numbers, and the
frames come out wrong). What is left (the packet index and slice headers, opening the file per decoder, converting
8 frames) is under 0.1 s.

All three must return the same frames (same indices, pixel content within a small tolerance; decord carries its
own FFmpeg build): the script stops with an error otherwise. Each call opens the file anew (opening and indexing
are part of the cost); the methods take turns in every repetition so load from other processes spreads over all
of them, and the median wall time per call is compared; the table gives each median with the range of the calls,
and the ratios of the calls made in the same repetition are printed too (their range is how far one measurement
strays). The CPU column is the process's CPU time over all its threads: when it exceeds the wall time, threads ran
in parallel, and on a busy machine wall times are noisy.

vstar's CPU time is almost all decoding: about 557 of the 60 s clip's 1,500 frames (every reference frame from the
keyframe before each target, plus the targets), ~3.9 ms each in one thread; what is left (the packet index, opening
the file per decoder, converting 8 frames) is under 0.1 s. Reference B-frames (x264's B-pyramid) no decoded frame
refers to cannot be left out: FFmpeg's decoder then fills the gap in frame numbers with copies and its reference
bookkeeping goes wrong (frames differ by up to 61), so that exactness sets the floor.
`--quick` uses short, small clips and one repetition to check that everything runs; it records nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from results import record

from vstar.video import sample_frames

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
NUM_FRAMES = 8
FPS = 25
# Largest mean absolute pixel difference (0-255) still counted as the same frame; neighbouring frames of the clips
# differ far more, because the background pans and the box moves every frame.
SAME_FRAME_TOLERANCE = 2.0
UNHELD = "decode every frame, unheld"


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int = FPS) -> Path:
    """Encode a panning textured clip with a moving box (written to a temporary name, then renamed into place)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # Coarse blocks plus fine grain: texture the encoder must track as it moves, like real footage.
    coarse = rng.integers(0, 256, (height // 8 + 40, width // 8 + 60, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1) // 2 + rng.integers(
        0, 40, (height + 320, width + 480, 3), dtype=np.uint8
    )
    box = max(8, height // 4)
    partial = path.with_suffix(".partial")
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # No gop/keyint: the encoder's default keyframe interval is the point of the clip. Frame threads, as the
        # ffmpeg command line uses them, give one slice per frame like most published video; PyAV's default (slice
        # threads) would cut every frame into slices that a decoder can spread over cores.
        stream.options = {"preset": "superfast", "crf": "23"}
        stream.thread_type = "FRAME"
        for t in range(int(seconds * fps)):
            # Smooth motion only: a jump would make the encoder insert a scene-cut keyframe.
            y = int(160 + 150 * np.sin(t / 40))
            x = int(240 + 240 * np.sin(t / 60))
            frame = texture[y : y + height, x : x + width].copy()
            bx = int((width - box) / 2 * (1 + np.sin(t / 30)))
            frame[height // 4 : height // 4 + box, bx : bx + box] = (255, int(128 + 100 * np.sin(t / 50)), 90)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(partial, path)
    return path


def make_ts_copy(source: Path) -> Path:
    """Stream-copy the clip into MPEG-TS (the muxer converts H.264 to Annex B, as `ffmpeg -c copy out.ts` does)."""
    path = source.with_suffix(".ts")
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with av.open(str(source)) as src, av.open(str(partial), "w", format="mpegts") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    os.replace(partial, path)
    return path


def frame_count(path: Path) -> int:
    """Frames of the clip: the header's count, or (MPEG-TS states none) the packets of one demux pass."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)


def expected_indices(total: int) -> list[int]:
    """The centres of `NUM_FRAMES` equal segments, the frames every method is asked for."""
    return [int((i + 0.5) * total / NUM_FRAMES) for i in range(NUM_FRAMES)]


def decode_every_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack([frames[i] for i in expected_indices(len(frames))])


def decode_every_frame_unheld(path: Path) -> np.ndarray:
    """The baseline without holding the frames: every frame still decoded and converted, only the wanted kept."""
    with av.open(str(path)) as container:
        indices = expected_indices(container.streams.video[0].frames)
        wanted, frames = set(indices), {}
        for i, frame in enumerate(container.decode(video=0)):
            array = frame.to_ndarray(format="rgb24")
            if i in wanted:
                frames[i] = array
    return np.stack([frames[i] for i in indices])


def decode_wanted_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        indices = expected_indices(container.streams.video[0].frames)
        wanted, last, frames = set(indices), max(indices), {}
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return np.stack([frames[i] for i in indices])


def decord_batch(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(expected_indices(len(reader))).asnumpy()


def vstar_sample(path: Path) -> np.ndarray:
    return sample_frames(path, num_frames=NUM_FRAMES).frames


def check_same_frames(path: Path, methods: dict[str, Callable[[Path], np.ndarray]]) -> None:
    """Fail loudly unless every method picks the same frames as vstar (a comparison of different work is void)."""
    clip = sample_frames(path, num_frames=NUM_FRAMES)
    total = frame_count(path)
    if clip.window_num_frames != total or clip.indices != expected_indices(total):
        raise SystemExit(
            f"{path.name}: vstar sampled {clip.indices} of {clip.window_num_frames} frames, the others "
            f"{expected_indices(total)} of {total}"
        )
    for name, method in methods.items():
        frames = method(path)
        if frames.shape != clip.frames.shape:
            raise SystemExit(f"{path.name}: {name} returned frames of shape {frames.shape}, vstar {clip.frames.shape}")
        diffs = np.abs(frames.astype(np.int16) - clip.frames.astype(np.int16)).mean(axis=(1, 2, 3))
        if diffs.max() > SAME_FRAME_TOLERANCE:
            raise SystemExit(f"{path.name}: {name} and vstar differ (mean abs difference per frame {diffs.round(2)})")


@dataclass
class Timing:
    """Seconds per call of one method, one entry per repetition: wall time, process CPU time (all threads), and the
    kernel's share of that CPU time (page faults: the baseline's 4 GB of frames are faulted in anew every call)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    def median(self, kind: str) -> float:
        return statistics.median(getattr(self, kind))

    def spread(self, kind: str) -> str:
        values = getattr(self, kind)
        return f"{min(values):.2f}-{max(values):.2f}"


def measure(path: Path, methods: dict[str, Callable[[Path], np.ndarray]], repeats: int) -> dict[str, Timing]:
    """Time every method `repeats` times, the methods taking turns in every repetition (so load from other
    processes falls on all of them alike, and per-repetition ratios compare calls made at the same moment)."""
    timings = {name: Timing() for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            wall, cpu, system = time.perf_counter(), time.process_time(), os.times().system
            method(path)
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(time.process_time() - cpu)
            timings[name].system.append(os.times().system - system)
    return timings


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short 640 x 360 clips, one repetition, no recording")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per method and clip")
    args = parser.parse_args(argv)
    width, height, lengths = (640, 360, (2, 12)) if args.quick else (1280, 720, (10, 60))
    repeats = 1 if args.quick else args.repeats

    methods: dict[str, Callable[[Path], np.ndarray]] = {
        "decode every frame": decode_every_frame,
        "decode wanted": decode_wanted_pyav,
    }
    try:
        import decord  # noqa: F401

        methods["decord"] = decord_batch
    except ImportError:
        print("decord is not installed (pip install -e '.[bench]'): its comparison is skipped")
    methods["vstar"] = vstar_sample

    started = time.perf_counter()
    clips = {s: make_clip(CACHE / f"pan-{width}x{height}-{FPS}fps-{s}s.mp4", s, width, height) for s in lengths}
    print(f"clips ready in {time.perf_counter() - started:.1f} s ({CACHE})")

    short, long = lengths
    timings: dict[int | str, dict[str, Timing]] = {}
    for seconds, path in clips.items():
        clip_methods = dict(methods)
        if seconds == long:
            # Only the long clip: it is where holding every frame costs the most.
            clip_methods = {UNHELD: decode_every_frame_unheld, **methods}
        check_same_frames(path, {name: m for name, m in clip_methods.items() if name != "vstar"})
        timings[seconds] = measure(path, clip_methods, repeats)
    ts_path = make_ts_copy(clips[long])
    ts_methods = {"decode every frame": decode_every_frame, "vstar": vstar_sample}
    check_same_frames(ts_path, {"decode every frame": decode_every_frame})
    timings["ts"] = measure(ts_path, ts_methods, repeats)

    print(
        f"\n{NUM_FRAMES} evenly spaced frames of a {width}x{height} H.264 clip at {FPS} fps: median [min-max] of "
        f"{repeats} calls; CPU counts every thread, of it 'sys' the kernel's time (page faults)"
    )
    print(f"{'clip':>6}  {'method':<26} {'wall s/call':>18} {'CPU s/call':>18} {'sys':>5} {'baseline / this':>15}")
    for seconds, rows in timings.items():
        base = rows["decode every frame"].median("wall")
        label = f"{long}s TS" if seconds == "ts" else f"{seconds}s"
        for name, t in rows.items():
            print(
                f"{label:>6}  {name:<26} {t.median('wall'):>6.3f} [{t.spread('wall'):>9}] "
                f"{t.median('cpu'):>6.3f} [{t.spread('cpu'):>9}] {t.median('system'):>5.2f} "
                f"{base / t.median('wall'):>14.2f}x"
            )

    def ratio(seconds: int | str, baseline: str, kind: str = "wall") -> float:
        return round(timings[seconds][baseline].median(kind) / timings[seconds]["vstar"].median(kind), 2)

    def per_repetition(seconds: int | str, baseline: str, kind: str = "wall") -> str:
        """The ratio of the calls made in each repetition: how far one measurement can stray from the median."""
        rows = timings[seconds]
        ratios = [b / v for b, v in zip(getattr(rows[baseline], kind), getattr(rows["vstar"], kind), strict=True)]
        return f"median {statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f}x"

    results = {
        "frame_sampling_10s": ratio(short, "decode every frame"),
        "frame_sampling_60s": ratio(long, "decode every frame"),
        "frame_sampling_60s_per_cpu_s": ratio(long, "decode every frame", kind="cpu"),
        "frame_sampling_60s_unheld": ratio(long, UNHELD),
        "frame_sampling_60s_per_cpu_s_unheld": ratio(long, UNHELD, kind="cpu"),
        "frame_sampling_ts_vs_decode_all": ratio("ts", "decode every frame"),
        "frame_sampling_10s_vs_decode_wanted": ratio(short, "decode wanted"),
        "frame_sampling_60s_vs_decode_wanted": ratio(long, "decode wanted"),
    }
    if "decord" in methods:
        results["frame_sampling_60s_vs_decord"] = ratio(long, "decord")
    print("ratios of the medians (higher = vstar faster): " + ", ".join(f"{k} {v}x" for k, v in results.items()))
    print("per-repetition ratios:")
    for label, args_ in {
        "frame_sampling_60s": (long, "decode every frame"),
        "frame_sampling_60s_per_cpu_s": (long, "decode every frame", "cpu"),
        "frame_sampling_60s_per_cpu_s_unheld": (long, UNHELD, "cpu"),
        "frame_sampling_ts_vs_decode_all": ("ts", "decode every frame"),
    }.items():
        print(f"  {label}: {per_repetition(*args_)}")
    return record(results, quick=args.quick)


if __name__ == "__main__":
    main()
