"""bf16 vs fp32 token agreement of the Triton backend on every fixture case and on the example video.

    python bench/bf16_agreement.py [--video-first]      (needs CUDA; PyAV for the video part)

Per case: ``pos`` = share of the fp32 run's real (non-pad) gaze slots where the bf16 run chose the same id at the
same place; ``set`` = per frame and row, |fp32 ids & bf16 ids| / |fp32 ids| (order-free), averaged.
"""
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixture_data import LOCAL, SHARED, call_kwargs, cases, load_case, model_input, shared_available  # noqa: E402
from triton_autogaze import AutoGaze  # noqa: E402
from triton_autogaze.pipeline import AutoGazePipeline  # noqa: E402


def agreement(a: dict, b: dict) -> tuple[float, float]:
    pa, pb = a["gazing_pos"].cpu(), b["gazing_pos"].cpu()
    real = ~a["if_padded_gazing"].cpu()
    L = min(pa.shape[1], pb.shape[1])
    pos = float(((pa[:, :L] == pb[:, :L]) & real[:, :L]).sum()) / max(int(real.sum()), 1)
    sets, start_a, start_b = [], 0, 0
    for la, lb in zip(a["num_gazing_each_frame"].tolist(), b["num_gazing_each_frame"].tolist()):
        for r in range(pa.shape[0]):
            sa = set(pa[r, start_a:start_a + la][real[r, start_a:start_a + la]].tolist())
            rb = ~b["if_padded_gazing"].cpu()[r, start_b:start_b + lb]
            sb = set(pb[r, start_b:start_b + lb][rb].tolist())
            if sa:
                sets.append(len(sa & sb) / len(sa))
        start_a, start_b = start_a + la, start_b + lb
    return pos, sum(sets) / max(len(sets), 1)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--video-first", action="store_true", help="the example video before the fixture cases")
    args = ap.parse_args()
    f32 = AutoGaze.from_pretrained(LOCAL / "model", device="cuda", backend="triton")
    b16 = AutoGaze.from_pretrained(LOCAL / "model", device="cuda", backend="triton", dtype=torch.bfloat16)
    print(f"{'case':34s} {'tokens':>7s} {'pos':>7s} {'set':>7s}")
    parts = [fixtures, video][::-1 if args.video_first else 1]
    for part in parts:
        part(f32, b16)


def fixtures(f32, b16) -> None:
    roots = [LOCAL] + ([SHARED] if shared_available() else [])
    tot = [0, 0.0, 0.0]
    for root in roots:
        for case in cases(root):
            if case.get("streaming"):
                continue
            data = load_case(root, case)
            try:
                video = model_input(case, data)
            except Exception:  # noqa: BLE001 (cases without a plain video input)
                continue
            kw = call_kwargs(case)
            a = f32({"video": video}, **kw)
            b = b16({"video": video}, **kw)
            pos, st = agreement(a, b)
            n = int((~a["if_padded_gazing"]).sum())
            tot[0] += n
            tot[1] += pos * n
            tot[2] += st * n
            print(f"{root.name[:6] + ':' + case['name']:34s} {n:7d} {pos:7.3f} {st:7.3f}", flush=True)
    print(f"{'ALL fixtures (token-weighted)':34s} {tot[0]:7d} {tot[1] / tot[0]:7.3f} {tot[2] / tot[0]:7.3f}")


def video(f32, b16) -> None:
    media = Path(os.environ.get("AUTOGAZE_SHARED_MEDIA", REPO.parent / "shared" / "media")) / "example_input.mp4"
    try:
        import av  # noqa: F401
    except ImportError:
        print("example video: skipped (no PyAV)")
        return
    if not media.is_file():
        print(f"example video: skipped (no {media})")
        return
    from triton_autogaze.video import read_video

    frames = read_video(media, max_frames=64)  # uint8 [T, H, W, 3]
    pf, pb = AutoGazePipeline(f32), AutoGazePipeline(b16)
    for mode in ("resize-224", "anyres-tile-224"):
        for tau in (None, 0.7):
            n = sum_pos = sum_set = 0
            for s in range(0, len(frames), 16):
                clip = frames[s:s + 16]
                ta = pf.trace_rgba_clip(clip, mode=mode, task_loss_requirement=tau)
                tb = pb.trace_rgba_clip(clip, mode=mode, task_loss_requirement=tau)
                d = lambda t: dict(gazing_pos=t.gazing_pos, if_padded_gazing=t.if_padded_gazing,  # noqa: E731
                                   num_gazing_each_frame=t.num_gazing_each_frame)
                pos, st = agreement(d(ta), d(tb))
                k = int((~ta.if_padded_gazing).sum())
                n, sum_pos, sum_set = n + k, sum_pos + pos * k, sum_set + st * k
            print(f"{'video ' + mode + ' tau ' + str(tau):34s} {n:7d} {sum_pos / n:7.3f} {sum_set / n:7.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
