"""minmax-diffusion with `--set base=PATH`: a tiny latent DiTPipeline folder and a tiny pixel UNet folder, built with
diffusers here, run end to end through the command line; provenance, the fine-tuning cache, and refusals."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from ddbench.cli import main
from ddbench.core.safeload import load_tensors

FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress", "--json"]
TINY = ["--set", "finetune_steps=2", "--set", "batch_size=6", "--set", "steps=3", "--set", "sample_batch=6",
        "--set", "quality=false", "--set", "checkpoint_every=0"]
pytestmark = pytest.mark.usefixtures("one_thread")


def save_dit_pipeline(path: Path, num_classes: int = 10) -> Path:
    """A DiT-XL/2-shaped pipeline in miniature: learned-variance DiT (8 out channels), RGB AutoencoderKL, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=num_classes,
                                norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=8, sample_size=8, layers_per_block=1)
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False)  # DiT-XL-2-256's scheduler/ is linear, 1000
    DiTPipeline(transformer=dit, vae=vae, scheduler=sched).save_pretrained(str(path))
    return path


def save_unet_pipeline(path: Path, size: int = 28, num_classes: int = 3) -> Path:
    """A pixel-space class-conditional UNet2DModel (+ its null row) with its DDPM schedule: a base trained elsewhere."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(16, 16),
                       layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, num_class_embeds=num_classes + 1)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {"dit": save_dit_pipeline(root / "dit"), "unet": save_unet_pipeline(root / "unet")}


@pytest.fixture
def env(tmp_path, tiny_plugin_config):
    out = tmp_path / "out"
    return {"out": out, "base": ["--config", str(tiny_plugin_config), "--out", str(out), "--dataset", "tiny"]}


def run(env, capsys, base: Path, *extra: str) -> tuple[int, dict | str]:
    rc = main(["run", "--method", "minmax-diffusion", "--set", f"base={base}", *TINY, *FAST, *extra, *env["base"]])
    cap = capsys.readouterr()
    if rc != 0:
        return rc, cap.err
    return rc, json.loads(cap.out.strip().splitlines()[-1])


def meta_of(env, run_id: str) -> dict:
    with sqlite3.connect(env["out"] / "ddbench.sqlite") as con:
        return json.loads(con.execute("SELECT meta FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])


def synset(result: dict) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_tensors(result["artifact"])  # a set file reads as tensors and plain containers
    return d["images"], d["labels"]


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_folder_base_runs_end_to_end_records_its_sha256_and_caches_the_finetuning(env, capsys, folders, kind, tmp_path):
    from ddbench_minmax.folder import folder_identity, inspect_folder

    src = shutil.copytree(folders[kind], tmp_path / kind)
    rc, res = run(env, capsys, src, "--ipc", "2")
    assert rc == 0, res
    x, y = synset(res)
    assert x.shape == (6, 1, 28, 28) and torch.bincount(y).tolist() == [2, 2, 2]  # the dataset's shape
    assert torch.isfinite(x).all() and 0 <= res["accuracy_mean"] <= 100
    assert -1e-5 <= x.min() and x.max() <= 1 + 1e-5  # the tiny dataset has mean 0, std 1: normalised == [0, 1]
    meta = meta_of(env, res["run_id"])
    base = meta["generator"]["base"]
    ident = folder_identity(inspect_folder(str(src)))
    assert base["source"] == "folder" and base["path"] == str(src.resolve()) and base["sha256"] == ident["sha256"]
    weights = "transformer/diffusion_pytorch_model.safetensors" if kind == "dit" else "unet/diffusion_pytorch_model.safetensors"
    assert base["weights_sha256"][weights] == ident["weights_sha256"][weights]
    assert (base["latent"] is not None) == (kind == "dit")
    assert meta["generator"]["finetune"]["cache"] == "miss"

    rc, again = run(env, capsys, src, "--ipc", "2", "--seed", "0", "--eval-epochs", "2")  # same generator
    assert rc == 0 and meta_of(env, again["run_id"])["generator"]["finetune"]["cache"] == "hit"

    w = src / weights  # one changed weight: another base, another fine-tuning
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(w))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(w), metadata={"format": "pt"})
    rc, changed = run(env, capsys, src, "--ipc", "2")
    assert rc == 0, changed
    m = meta_of(env, changed["run_id"])["generator"]
    assert m["finetune"]["cache"] == "miss" and m["base"]["sha256"] != base["sha256"]


def test_latent_base_under_a_budget_pays_for_the_vae_decode(env, capsys, folders):
    rc, res = run(env, capsys, folders["dit"], "--budget", "0.5")
    assert rc == 0, res
    meta = meta_of(env, res["run_id"])
    x, y = synset(res)
    assert x.shape[1:] == (1, 28, 28) and len(set(torch.bincount(y).tolist())) == 1
    assert meta["budget_honoured"] and meta["generation_seconds"] <= 0.5
    assert meta["throughput_fit"]["overhead"] > 0 and meta["sampler"]["images"] == len(y)  # the decode, timed


def test_pixel_throughput_has_no_decode_overhead_and_latent_has_one(folders):
    from ddbench_minmax.folder import inspect_folder, load_folder
    from ddbench_minmax.generator import sample_shape
    from ddbench_minmax.latent import LatentSpace
    from ddbench_minmax.sampler import DSRSampler

    pixel, _ = load_folder(inspect_folder(str(folders["unet"])))
    assert DSRSampler().measure(pixel, 3, sample_shape(pixel), 6).overhead == 0.0
    folder = inspect_folder(str(folders["dit"]))
    latent, vae = load_folder(folder)
    latent.decoder = LatentSpace(vae, folder.pixel_size, 28, 1)
    assert DSRSampler().measure(latent, 3, sample_shape(latent), 6).overhead > 0


def test_grey_data_goes_through_an_rgb_vae_and_back(folders):
    from ddbench_minmax.folder import inspect_folder, load_folder
    from ddbench_minmax.latent import LatentSpace

    folder = inspect_folder(str(folders["dit"]))
    _, vae = load_folder(folder)
    space = LatentSpace(vae, folder.pixel_size, image_size=28, channels=1)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    z = space.encode(x, torch.Generator().manual_seed(0))
    assert z.shape == (5, 4, 4, 4) and folder.pixel_size == 8  # 4 latent cells x the VAE's factor 2
    z2 = space.encode(x, torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)  # the posterior draw follows the generator (a resumed fine-tuning draws the same)
    out = space.decode(z)
    assert out.shape == (5, 1, 28, 28) and out.min() >= -1 and out.max() <= 1


def test_null_class_is_the_pretrained_models_own_row(folders):
    from ddbench_minmax.folder import inspect_folder, load_folder

    model, _ = load_folder(inspect_folder(str(folders["dit"])))
    assert model.config.num_classes == 10 and model.config.null_class == 10  # DiT: the row after the classes
    table = model.net.transformer_blocks[0].norm1.emb.class_embedder
    assert table.embedding_table.num_embeddings == 11 and table.dropout_prob == 0.0  # ddbench drops labels itself
    model.train()
    x, t, y = torch.randn(4, 4, 4, 4), torch.full((4,), 10), torch.zeros(4, dtype=torch.long)
    assert model(x, t, y).shape == (4, 4, 4, 4)  # learned-variance half dropped
    assert torch.equal(model(x, t, y), model(x, t, y))  # no hidden label dropout in train mode


@pytest.mark.parametrize("damage, message", [
    ("no-weights", "no weights (diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin is missing)"),
    ("foreign", "is a 'UNet2DConditionModel' config; expected one of DiTTransformer2DModel"),
    ("no-scheduler", "scheduler/scheduler_config.json is missing"),
    ("vae-channels", "the VAE makes 8-channel latents but the denoiser takes 4 channels"),
    ("missing", "is not allowed; give shipped, train or an existing local diffusers folder"),
    ("few-rows", "its label table has 2 classes; the dataset tiny has 3"),
    # issue 28: a bogus schedule failed only after work began, -5 timesteps was blamed on `steps`, and a sparse
    # multi-GB weight file filled memory before the loader refused it
    ("bad-beta", "has beta_schedule='bogus'; supported: linear, squaredcos_cap_v2"),
    ("negative-timesteps", "has num_train_timesteps=-5; it must be an integer >= 1"),
    ("padded-weights", "but its header describes"),
])
def test_a_bad_folder_is_refused_in_one_line_before_any_work(env, capsys, folders, tmp_path, damage, message):
    src = shutil.copytree(folders["dit"], tmp_path / "dit")
    if damage == "no-weights":
        (src / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    elif damage == "foreign":
        cfg = json.loads((src / "transformer" / "config.json").read_text())
        (src / "transformer" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    elif damage == "no-scheduler":
        shutil.rmtree(src / "scheduler")
    elif damage == "vae-channels":
        cfg = json.loads((src / "vae" / "config.json").read_text())
        (src / "vae" / "config.json").write_text(json.dumps({**cfg, "latent_channels": 8}))
    elif damage == "missing":
        src = tmp_path / "nowhere"
    elif damage == "few-rows":
        src = save_dit_pipeline(tmp_path / "dit2", num_classes=2)
    elif damage in ("bad-beta", "negative-timesteps"):
        path = src / "scheduler" / "scheduler_config.json"
        cfg = json.loads(path.read_text())
        cfg.update({"beta_schedule": "bogus"} if damage == "bad-beta" else {"num_train_timesteps": -5})
        path.write_text(json.dumps(cfg))
    elif damage == "padded-weights":
        weights = src / "transformer" / "diffusion_pytorch_model.safetensors"
        with open(weights, "r+b") as fh:
            fh.truncate(weights.stat().st_size + 10 * 2**30)  # sparse: 10 GiB that take no disk
    rc, err = run(env, capsys, src, "--ipc", "1")
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not env["out"].exists() or not any(env["out"].iterdir())  # nothing written


def test_pickled_weights_are_refused_unless_the_user_opts_in(env, capsys, folders, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from ddbench_minmax.folder import BIN_OPT_IN, inspect_folder, load_folder

    src = shutil.copytree(folders["dit"], tmp_path / "dit")
    st = src / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = load_file(st)
    torch.save(weights, src / "transformer" / "diffusion_pytorch_model.bin")
    st.unlink()
    rc, err = run(env, capsys, src, "--ipc", "1")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "its weights are a pickle (diffusion_pytorch_model.bin)" in err and BIN_OPT_IN in err
    assert not env["out"].exists() or not any(env["out"].iterdir())  # nothing written
    monkeypatch.setenv(BIN_OPT_IN, "1")  # the user's opt-in: diffusers reads it (weights only)
    model, _ = load_folder(inspect_folder(str(src)))
    state = model.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())


def test_a_pixel_folder_of_another_size_is_refused(env, capsys, tmp_path):
    src = save_unet_pipeline(tmp_path / "unet32", size=32)
    rc, err = run(env, capsys, src, "--ipc", "1")
    assert rc == 2 and "a pixel-space model of 1 channels at 32 px; the dataset tiny has 1 channels at 28 px" in err


def test_difffit_on_a_diffusers_dit_is_the_seeds_subset(folders):
    """The seed's DiffFit trains biases, norms and the label table of its DiT, not the adaLN or timestep MLPs."""
    from ddbench_minmax.folder import inspect_folder, load_folder
    from ddbench_minmax.train import trainable_parameters

    model, _ = load_folder(inspect_folder(str(folders["dit"])))
    trainable_parameters(model, "difffit")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("class_embedder.embedding_table.weight") for n in names)
    assert all(n.endswith(".bias") or "class_embedder" in n for n in names)  # the DiT's norms have no parameters
    assert "net.transformer_blocks.0.norm1.linear.weight" not in names


def test_latent_base_takes_the_prototype_levers_in_latent_space(env, capsys, folders):
    """k-means prototypes are made in pixels and VAE-encoded (posterior means) for img2img and mode guidance; a pool
    of decoded candidates is selected in pixels."""
    rc, res = run(env, capsys, folders["dit"], "--ipc", "2", "--set", "prototypes=kmeans", "--set", "strength=0.7",
                  "--set", "mode_guidance=0.1", "--set", "pool=2", "--set", "selector=random",
                  "--set", "selector_space=pixels")
    assert rc == 0, res
    x, y = synset(res)
    assert x.shape == (6, 1, 28, 28) and torch.isfinite(x).all()
    assert meta_of(env, res["run_id"])["sampler"]["strength"] == 0.7
