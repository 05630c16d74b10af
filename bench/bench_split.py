"""Scene splitting speed against its floor, decoding every frame (`vstar split`, DESIGN.md section 7).

A 720p H.264 file (textured shots with hard cuts, a moving block in each) is written here, then:

- `split_vs_decode_only`: frames per CPU second of `split_video` (content detector, default stitching, one process,
  one decoder thread) over those of decoding every frame with PyAV on one thread and nothing else: decoding is
  the floor, so 1.0 is the best possible; the target is >= 0.8. Both run on one thread, so CPU time is the time on
  one core, and other processes on a shared machine move it less than wall time (`split_vs_decode_only_wall`).
- `split_realtime_factor`: seconds of video split per wall second (one process).
- `split_2proc_vs_1proc`: wall time of `vstar split` over four copies of the file with one process, over the time with
  two (`--num_proc 2`); 2.0 would be perfect scaling on two cores.

```bash
python bench/bench_split.py          # records into bench/results.json
python bench/bench_split.py --quick  # a smoke run on a short file, records nothing
```
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
FPS = 30
SIZE = (720, 1280)


def write_720p(path: Path, seconds: float, shot_seconds: float = 4.0) -> Path:
    """Shots of a drifting random texture in a different tint each, film grain, a moving block; x264 `veryfast` at
    its default quality: about 3.3 Mbit/s, the bitrate of ordinary 720p30 footage (decoding cost follows bitrate,
    and a clean synthetic picture at a tenth of it would make the decoding floor unrealistically low)."""
    rng = np.random.default_rng(0)
    height, width = SIZE
    texture = rng.integers(0, 256, (height // 8, width // 8 + 64), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8), np.uint8)).astype(np.float32)  # 8-pixel cells
    grains = [rng.normal(0, 6, (height, width, 1)).astype(np.float32) for _ in range(7)]
    tints = rng.uniform(0.3, 1.0, (32, 3)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "g": str(2 * FPS)})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for t in range(int(seconds * FPS)):
            shot = int(t / (shot_seconds * FPS))
            grey = texture[:, (t * 2) % 512 : (t * 2) % 512 + width]
            image = grey[..., None] * tints[shot % len(tints)] + grains[t % len(grains)]
            x = (t * 12) % (width - 160)
            image[300:420, x : x + 160] = 255
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decode_only(path: Path) -> tuple[float, float, int]:
    """CPU seconds and wall seconds of decoding every frame on one thread, and the frame count."""
    cpu, wall = time.process_time(), time.perf_counter()
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        for _ in container.decode(stream):
            count += 1
    return time.process_time() - cpu, time.perf_counter() - wall, count


def split_once(path: Path) -> tuple[float, float, int, float]:
    """CPU seconds and wall seconds of splitting the file, its frames and its seconds of video."""
    from vstar.curate.split import SplitConfig, split_video

    cpu, wall = time.process_time(), time.perf_counter()
    result = split_video(str(path), SplitConfig())
    assert result.error is None, result.error
    return time.process_time() - cpu, time.perf_counter() - wall, result.stats["frames"], result.stats["seconds"]


def split_folder(folder: Path, output: Path, num_proc: int) -> float:
    from vstar.curate.split import SplitConfig, split_videos

    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    split_videos(SplitConfig(videos=str(folder), output=str(output), num_proc=num_proc))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    seconds = 4.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_720p(root / "long720.mp4", seconds)
        path_bytes = path.stat().st_size
        split_once(path)  # imports and first-call costs out of the timings
        # Interleaved, best of three each: on a shared machine the load moves between runs.
        decode_runs, split_runs = [], []
        for _ in range(3):
            decode_runs.append(decode_only(path))
            split_runs.append(split_once(path))
        decode_cpu, decode_wall = min(r[0] for r in decode_runs), min(r[1] for r in decode_runs)
        split_cpu, split_wall = min(r[0] for r in split_runs), min(r[1] for r in split_runs)
        frames, video_s = split_runs[0][2], split_runs[0][3]
        folder = root / "four"
        folder.mkdir()
        for k in range(4):
            shutil.copy(path, folder / f"copy{k}.mp4")
        one = split_folder(folder, root / "out1", 1)
        two = split_folder(folder, root / "out2", 2)
    numbers = {
        "split_vs_decode_only": round(decode_cpu / split_cpu, 3),
        "split_vs_decode_only_wall": round(decode_wall / split_wall, 3),
        "split_realtime_factor": round(video_s / split_wall, 2),
        "split_2proc_vs_1proc": round(one / two, 3),
        "split_decode_only_fps_720p": round(frames / decode_cpu, 1),
        "split_fps_720p": round(frames / split_cpu, 1),
        "split_bench_mbps_720p": round(path_bytes * 8 / video_s / 1e6, 2),
    }
    print(numbers)
    record(numbers, quick=args.quick)


if __name__ == "__main__":
    main()
