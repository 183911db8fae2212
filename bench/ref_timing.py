"""Quick timing of the torch reference (any device): 16-frame 224px clip, full budget and with stopping."""
import sys, time
sys.path.insert(0, "tests")
import torch
from fixture_data import LOCAL, SHARED, cases, load_case, model_input, shared_available
from triton_autogaze import AutoGaze

dev = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
root = SHARED if shared_available() else LOCAL
name = "clip224_t16" if shared_available() else "clip224_t4"
c = [c for c in cases(root) if c["name"] == name][0]
v = model_input(c, load_case(root, c)).to(dev)
m = AutoGaze.from_pretrained(LOCAL / "model", device=dev, backend="torch")
for tau in (None, -2.0):
    m.generate(v, gazing_ratio=0.75, task_loss_requirement=tau)
    ts = []
    for _ in range(3):
        if dev == "cuda": torch.cuda.synchronize()
        t0 = time.perf_counter(); tr = m.generate(v, gazing_ratio=0.75, task_loss_requirement=tau)
        if dev == "cuda": torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    print(f"reference {dev} {name} tau={tau}: median {sorted(ts)[1]*1000:.1f} ms, tokens {int(tr.num_gazing_each_frame.sum())}")
