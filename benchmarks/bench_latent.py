"""Speed of the seed's configuration: a latent DiT at 256 px (32x32x4 latents) with a Stable-Diffusion-shaped VAE.

    python benchmarks/bench_latent.py --dit xl --device cuda      # DiT-XL/2 shapes (675 M parameters), a GPU
    python benchmarks/bench_latent.py --dit s --device cpu        # DiT-S/2 shapes (33 M), what a CPU can time

Random weights (speed does not depend on them), saved as a diffusers DiTPipeline folder and loaded through
ddbench's `base=PATH` loader, then timed as a run uses them: min-max fine-tuning steps (DiffFit, batch 8 as
FanJunqiao/DD_Track2 run.sh `--global-batch-size 8`, bf16 autocast, every batch VAE-encoded from 32 px images
resized to 256 as the seed does for CIFAR) and DSR sampling (S = 10, guidance 4.0, the seed's sample.py values,
including the VAE decode and the resize back to 32 px). Prints one JSON object with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

# facebookresearch/DiT models.py: DiT-XL/2 depth 28, hidden 1152, 16 heads; DiT-S/2 depth 12, hidden 384, 6 heads.
DITS = {"xl": dict(num_layers=28, num_attention_heads=16, attention_head_dim=72),
        "s": dict(num_layers=12, num_attention_heads=6, attention_head_dim=64)}
# stabilityai/sd-vae-ft-ema config.json (the seed's --vae ema): 4 levels, 2 layers each, 4 latent channels.
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, norm_num_groups=32, sample_size=256, scaling_factor=0.18215)


def make_folder(path: Path, dit: str) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    net = DiTTransformer2DModel(in_channels=4, out_channels=8, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
                                norm_type="ada_norm_zero", **DITS[dit])
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False)  # facebook/DiT-XL-2-256 scheduler: linear, 1000
    DiTPipeline(transformer=net, vae=AutoencoderKL(**SD_VAE), scheduler=sched).save_pretrained(str(path))
    return path


def measure(folder: Path, device: str, train_steps: int, images: int, classes: int = 10, size: int = 32) -> dict:
    from ddbench.api import SampleRequest
    from ddbench_minmax.folder import inspect_folder, load_folder
    from ddbench_minmax.generator import sample_shape
    from ddbench_minmax.latent import LatentSpace
    from ddbench_minmax.sampler import DSRSampler
    from ddbench_minmax.train import TrainSpec, train_phase

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    f = inspect_folder(str(folder))
    model, vae = load_folder(f)
    space = LatentSpace(vae, f.pixel_size, size, 3, dev)
    data = torch.rand(classes * 8, 3, size, size) * 2 - 1
    labels = torch.arange(classes).repeat(8)
    out: dict = {"folder": str(folder), "device": str(dev), "parameters": model.num_parameters(),
                 "load_average_before": [round(v, 2) for v in os.getloadavg()]}

    def spec(steps: int) -> TrainSpec:
        return TrainSpec(steps=steps, batch_size=8, lr=1e-4, seed=0, lr_schedule="constant", lambda_pos=0.002,
                         lambda_neg=0.001, trainable="difffit", precision="bf16", checkpoint_every=0, name="bench")

    train_phase(model, data, labels, spec(2), progress=False, device=dev, threads=torch.get_num_threads(),
                encode=space.encode)  # warm-up
    sync()
    t0 = time.perf_counter()
    ema, stats = train_phase(model, data, labels, spec(train_steps), progress=True, device=dev,
                             threads=torch.get_num_threads(), encode=space.encode)
    sync()
    dt = time.perf_counter() - t0
    out["finetune"] = {"steps": train_steps, "batch": 8, "seconds": round(dt, 3), "steps_per_s": round(train_steps / dt, 4),
                       "trainable_parameters": stats["trainable_parameters"]}
    if dev.type == "cuda":
        out["finetune"]["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    ema.to(dev).eval()
    ema.decoder = space
    sampler = DSRSampler()
    thr = sampler.measure(ema, classes, sample_shape(ema), images, guidance=4.0)
    req = SampleRequest(num_classes=classes, steps=10, image_shape=sample_shape(ema), ipc=max(1, images // classes),
                        guidance=4.0, batch_size=images, seed=0, progress=True)
    res = sampler.generate(ema, req)
    out["sampling"] = {**res.stats, "decode_seconds_per_batch": round(thr.overhead, 3),
                       "predicted_images_per_s_S10": round(thr.images_per_second(10), 3),
                       "image_shape": list(res.images.shape[1:])}
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out["torch"], out["threads"] = torch.__version__, torch.get_num_threads()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dit", choices=sorted(DITS), default="xl")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--folder", default=None, help="an existing DiTPipeline folder (default: a random one in a temp dir)")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=100, help="images per sampling batch (whole rounds of 10 classes)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else make_folder(Path(tmp) / f"dit-{args.dit}", args.dit)
        print(json.dumps({"dit": args.dit, **measure(folder, args.device, args.train_steps, args.images)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
