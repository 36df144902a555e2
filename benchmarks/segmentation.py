"""Label-efficient segmentation on held-out scenes: DDPM features vs baselines vs DDeP.

Trains (or reuses) under ``--root``:

* ``ddpm``: an unconditional DDPM on the scene set (configs/ddpm_scenes.py, shrunk to
  ``--channels`` / ``--pretrain_steps`` / ``--batch``);
* ``ddep_pretrain``: DDeP's denoising pretraining of a UNet of the same shape, same budget
  (configs/segmentation_ddep.py:pretrain);

then, for each number of labelled scenes in ``--labelled`` (the first n labelled training
scenes, so 5 of them are among the 10 and 20), one run per method:

* ``pixels``, ``random_unet``, ``ddpm``: the MLP ensemble of
  configs/segmentation_ddpm_features.py on raw pixels, a random UNet's features, the DDPM's;
* ``ddep``, ``random_init``: configs/segmentation_ddep.py:finetune from the pretraining and
  from a random initialisation;

and finally a DDPM of label maps (``label_prior``: ``2 one_hot - 1``, 11 channels, on the
training scenes' label maps) refines the best pixel classifier at the largest label count by
plug-and-play (:func:`diffjax.tasks.pnp.refine_segmentation`), compared with the argmax of
the same classifier's mean probabilities (the refinement's starting point).

``--ddpm_workdir`` / ``--ddep_workdir`` use runs trained with the configs' own defaults
instead (``python train.py --config configs/ddpm_scenes.py --workdir D``; ``python train.py
--config configs/segmentation_ddep.py:pretrain --workdir P``); the fine-tunes then take P's
UNet shape.

Every run is evaluated on the same ``--num_eval`` labelled scenes on the held-out
backgrounds (``gravel``, ``chelsea``, ``coins``: never seen by any training) with held-out
Fashion-MNIST items: mIoU (one confusion matrix over the set, classes present in the ground
truth) and pixel accuracy. The claims are paired comparisons on those scenes (DDPM features
against pixels and against random-UNet features, DDeP against random init, the refinement
against its start), each with a 95 % bootstrap interval over scenes
(:func:`diffjax.metrics.bootstrap_miou_difference`). The refinement's constraint weight is
chosen among ``--pnp_weights`` on ``--num_val`` labelled scenes of the *training*
backgrounds that no classifier was trained on, never on the test scenes. Writes
``ROOT/segmentation.json``, prints a markdown table and the comparisons, and draws
``--figure`` (a few held-out scenes, their labels and each method's prediction).

    python benchmarks/segmentation.py --root /tmp/seg_bench
    python benchmarks/segmentation.py --root DIR --quick     # a smoke run (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from configs.ddpm_scenes import get_config as ddpm_config  # noqa: E402
from configs.segmentation_ddep import get_config as ddep_config  # noqa: E402
from configs.segmentation_ddpm_features import get_config as features_config  # noqa: E402
from diffjax import run_segmentation as rs  # noqa: E402
from diffjax.run_config import apply_overrides  # noqa: E402
from diffjax.run_kinds import train_and_evaluate  # noqa: E402

METHODS = ("pixels", "random_unet", "ddpm", "random_init", "ddep")


def _shrink(c, args):
    c.model.base_channels = args.channels
    c.model.attn_resolutions = ()
    c.training.batch_size = args.batch
    c.training.num_steps = args.pretrain_steps
    c.training.log_every = 50
    c.training.ckpt_every = args.pretrain_steps
    c.training.sample_every = 0
    c.training.progress_bar = False
    c.optim.lr = 1e-3
    c.optim.warmup_steps = min(100, args.pretrain_steps // 5)
    c.eval.enabled = False
    return c


def _train_once(config, workdir, done_file):
    if os.path.exists(os.path.join(workdir, done_file)):
        print(f"reusing {workdir}", flush=True)
        return None
    start = time.perf_counter()
    summary = train_and_evaluate(config, workdir)
    print(f"trained {workdir} in {time.perf_counter() - start:.0f} s", flush=True)
    return summary


def _ddpm_dir(args):
    return args.ddpm_workdir or os.path.join(args.root, "ddpm")


def _ddep_dir(args):
    return args.ddep_workdir or os.path.join(args.root, "ddep_pretrain")


def _method_config(method, n, args, root):
    common = {"segmentation.num_labelled": n, "segmentation.num_eval": args.num_eval, "training.log_every": 100}
    if method in ("pixels", "random_unet", "ddpm"):
        c = _shrink(features_config(), args)
        return apply_overrides(c, {**common, "segmentation.features": method,
                                   "segmentation.backbone_workdir": _ddpm_dir(args),
                                   "segmentation.steps": args.mlp_steps,
                                   "segmentation.num_members": args.members})
    c = _shrink(ddep_config("finetune"), args)
    if args.ddep_workdir:  # the fine-tuned UNet must have the pretraining's shape
        c.model = rs.load_run_config(args.ddep_workdir).model
    return apply_overrides(c, {**common, "segmentation.init": "random" if method == "random_init" else "pretrained",
                               "segmentation.pretrain_workdir": _ddep_dir(args),
                               "segmentation.steps": args.finetune_steps})


def _confusions(pred, labels):
    """``(N, 11, 11)`` int64 confusion matrices, one per image, of ``(N, S, S)`` label maps."""
    import jax

    from diffjax.metrics import confusion_matrix

    per_image = jax.vmap(lambda p, t: confusion_matrix(p, t, 11))
    return np.asarray(per_image(np.asarray(pred, np.int32), np.asarray(labels, np.int32)), np.int64)


def _per_image_confusions(workdir, images, labels):
    """The confusion matrices of a finished run on each evaluation scene."""
    segmenter = rs.load_segmenter(workdir)
    # In the run's own evaluation batches: a float-level difference between batch sizes can
    # flip a pixel whose vote is tied.
    step = int(segmenter.config.segmentation.feature_batch_size)
    pred = np.concatenate([np.asarray(segmenter.predict(images[i:i + step])[0]) for i in range(0, len(images), step)])
    return _confusions(pred, labels)


def _comparisons(cms, args, refinement):
    """The claims as paired mIoU differences with 95 % bootstrap intervals over the test scenes."""
    from diffjax.metrics import bootstrap_miou_difference

    pairs = [(f"{a}_{n}", f"{b}_{n}") for n in args.labelled
             for a, b in (("ddpm", "pixels"), ("ddpm", "random_unet"), ("ddep", "random_init"))]
    if refinement:
        pairs.append(("refined", "classifier_argmax"))
    out = []
    for a, b in pairs:
        ci = bootstrap_miou_difference(cms[a], cms[b])
        out.append({"a": a, "b": b, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in ci.items()}})
    return out


def _label_prior(root, args):
    """A DDPM of label maps (``2 one_hot - 1``, 11 channels) on the training scenes' labels."""
    import jax
    import optax
    from flax import nnx

    from diffjax.data.scenes import NUM_CLASSES, Scenes
    from diffjax.losses import make_loss_fn
    from diffjax.nn import UNet, UNetConfig
    from diffjax.sde import VPSDE
    from diffjax.training import create_train_state, make_train_step

    mc = UNetConfig(image_size=32, in_channels=NUM_CLASSES, base_channels=args.channels, channel_mult=(1, 2, 2),
                    num_res_blocks=1, attn_resolutions=())
    model, sde = UNet(mc, rngs=nnx.Rngs(params=0)), VPSDE()
    path = os.path.join(root, "label_prior", rs.STATE_FILE)
    if os.path.exists(path):
        nnx.update(model, rs._load_npz(path, nnx.state(model, nnx.Param)))
        return model, sde, None
    scenes, loss = Scenes("train", 32, 0), make_loss_fn(sde)

    def batches():
        step = 0
        while True:
            maps = scenes.batch(step, args.batch, seed=1)["label_map"]
            yield 2.0 * np.eye(NUM_CLASSES, dtype=np.float32)[maps] - 1.0
            step += 1

    start = time.perf_counter()
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, min(100, args.prior_steps // 5), args.prior_steps)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    # The library's train step (step s keyed by fold_in(key(0), s)); no EMA: the prior is the last parameters.
    graphdef, state = create_train_state(model, optimizer)
    train_step = jax.jit(make_train_step(graphdef, loss, optimizer, 0.0), donate_argnums=0)
    for _, maps in zip(range(args.prior_steps), batches()):
        state, metrics = train_step(state, {"image": maps}, jax.random.key(0))
    print(f"label prior: {args.prior_steps} steps, loss {float(metrics['loss']):.4f}", flush=True)
    nnx.update(model, state.params)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rs._save_npz(path, nnx.state(model, nnx.Param))
    jax.clear_caches()
    return model, sde, round(time.perf_counter() - start, 1)


def _refinement(root, args, results):
    """Plug-and-play refinement of the best pixel classifier at the largest label count.

    The constraint weight is chosen among ``--pnp_weights`` by the mIoU on ``--num_val``
    labelled scenes of the training backgrounds after the classifier's own ones; only the
    chosen weight is run on the test scenes.
    """
    import jax
    from flax import nnx

    from diffjax.metrics import mean_iou_from_confusion
    from diffjax.tasks.pnp import refine_segmentation

    n = max(args.labelled)
    best = max(("pixels", "random_unet", "ddpm"), key=lambda m: results[f"{m}_{n}"]["miou"])
    model, sde, seconds = _label_prior(root, args)
    graphdef, state = nnx.split(model)
    seg = rs.load_segmenter(os.path.join(root, f"{best}_{n}"))
    config = _method_config(best, n, args, root)
    images, labels, _ = rs.labelled_data(config, "test")
    val_config = apply_overrides(config, {"segmentation.num_labelled": n + args.num_val})
    val_images, val_labels, _ = rs.labelled_data(val_config, "train")
    val_images, val_labels = val_images[n:], val_labels[n:]  # scenes the classifier never saw

    # The weight is a traced argument: one compilation for every candidate and the test run.
    refine = jax.jit(lambda lp, key, weight: refine_segmentation(
        lambda x, t: nnx.merge(graphdef, state)(x, t), sde, lp, key=key, steps=args.pnp_steps,
        learning_rate=args.pnp_lr, weight=weight, temperature=0.5, t_max=args.pnp_t_max, t_min=0.02))

    def run(weight, images, labels):
        starts, refined = [], []
        for b, first in enumerate(range(0, len(images), 16)):
            log_p = seg.log_probs(images[first:first + 16])
            starts.append(np.argmax(log_p, -1))
            refined.append(np.asarray(refine(log_p, jax.random.key(b), weight)))
        return _confusions(np.concatenate(starts), labels), _confusions(np.concatenate(refined), labels)

    validation = {}
    for weight in args.pnp_weights:
        start_cms, refined_cms = run(weight, val_images, val_labels)
        validation[str(weight)] = {"classifier_argmax_miou": float(mean_iou_from_confusion(start_cms.sum(0))),
                                   "refined_miou": float(mean_iou_from_confusion(refined_cms.sum(0)))}
    weight = max(args.pnp_weights, key=lambda w: validation[str(w)]["refined_miou"])
    start_cms, refined_cms = run(weight, images, labels)
    out = {"classifier": f"{best}_{n}", "label_prior_seconds": seconds, "weight": weight,
           "validation": validation, "num_val": len(val_images)}
    for name, cms in (("classifier_argmax", start_cms), ("refined", refined_cms)):
        cm = cms.sum(0)
        out[f"{name}_miou"] = float(mean_iou_from_confusion(cm))
        out[f"{name}_pixel_accuracy"] = float(np.trace(cm) / cm.sum())
    return out, {"classifier_argmax": start_cms, "refined": refined_cms}


def _figure(root, path, results, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(args.labelled)
    c = _method_config("ddpm", n, args, root)
    images, labels, _ = rs.labelled_data(c, "test")
    shown = images[:4]
    palette = np.asarray(rs.label_palette(), np.uint8).reshape(256, 3)
    rows = [("image", (shown + 1) / 2), ("labels", palette[labels[:4]])]
    for method in METHODS:
        seg = rs.load_segmenter(os.path.join(root, f"{method}_{n}"))
        pred, _ = seg.predict(shown)
        rows.append((f"{method} ({results[f'{method}_{n}']['miou']:.2f})", palette[pred]))
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(1.6 * len(shown), 1.6 * len(rows)))
    for r, (name, imgs) in enumerate(rows):
        for j in range(len(shown)):
            axes[r, j].imshow(np.clip(imgs[j], 0, 1) if imgs.dtype != np.uint8 else imgs[j], interpolation="nearest")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(f"held-out scenes, {n} labelled training scenes (mIoU of the set)", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main(argv=None):
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder of the runs (reused when finished)")
    parser.add_argument("--labelled", default="5,10,20", help="numbers of labelled training scenes")
    parser.add_argument("--num_eval", type=int, default=64, help="held-out labelled scenes")
    parser.add_argument("--channels", type=int, default=16, help="UNet base channels (DDPM and DDeP)")
    parser.add_argument("--batch", type=int, default=16, help="pretraining batch size")
    parser.add_argument("--pretrain_steps", type=int, default=1000, help="DDPM and DDeP pretraining steps")
    parser.add_argument("--mlp_steps", type=int, default=1000, help="Adam steps of each MLP")
    parser.add_argument("--members", type=int, default=10, help="MLPs in the ensemble")
    parser.add_argument("--finetune_steps", type=int, default=600, help="DDeP / random-init fine-tuning steps")
    parser.add_argument("--prior_steps", type=int, default=3000, help="training steps of the label-map prior")
    parser.add_argument("--pnp_steps", type=int, default=60, help="plug-and-play refinement steps")
    parser.add_argument("--pnp_lr", type=float, default=0.02)
    parser.add_argument("--pnp_weights", default="1,3,10,30",
                        help="candidate weights of the classifier's log-likelihood (chosen on validation scenes)")
    parser.add_argument("--num_val", type=int, default=64, help="validation scenes for the refinement's weight")
    parser.add_argument("--ddpm_workdir", default="",
                        help="a trained configs/ddpm_scenes.py run to use as the backbone")
    parser.add_argument("--ddep_workdir", default="",
                        help="a finished configs/segmentation_ddep.py:pretrain run to fine-tune")
    parser.add_argument("--pnp_t_max", type=float, default=0.3, help="first noise level of the refinement")
    parser.add_argument("--no_pnp", action="store_true", help="skip the label-map prior and the refinement")
    parser.add_argument("--figure", default="outputs/benchmarks/segmentation.png")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.pretrain_steps, args.mlp_steps, args.finetune_steps = 8, 20, 30, 20
        args.members, args.num_eval, args.labelled, args.pnp_steps = 2, 8, "2,4", 5
        args.num_val, args.pnp_weights, args.prior_steps = 4, "1,3", 20
    args.labelled = [int(v) for v in args.labelled.split(",")]
    args.pnp_weights = [float(v) for v in args.pnp_weights.split(",")]
    root = args.root
    os.makedirs(root, exist_ok=True)

    timings = {}
    for name, config in (("ddpm", _shrink(ddpm_config(), args)),
                         ("ddep_pretrain", _shrink(ddep_config("pretrain"), args))):
        if (name == "ddpm" and args.ddpm_workdir) or (name == "ddep_pretrain" and args.ddep_workdir):
            print(f"using {args.ddpm_workdir if name == 'ddpm' else args.ddep_workdir} for {name}", flush=True)
            continue
        start = time.perf_counter()
        done = "checkpoints" if name == "ddpm" else rs.STATE_FILE
        if name == "ddpm" and os.path.isdir(os.path.join(root, name, "checkpoints")):
            print(f"reusing {root}/{name}", flush=True)
        else:
            _train_once(config, os.path.join(root, name), done)
            timings[f"{name}_seconds"] = round(time.perf_counter() - start, 1)

    results_path = os.path.join(root, "segmentation.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            stored = json.load(f)
        results, timings = stored.get("runs", {}), {**stored.get("timings", {}), **timings}
    from diffjax.metrics import mean_iou_from_confusion

    test_images, test_labels, _ = rs.labelled_data(_method_config("pixels", 1, args, root), "test")
    cms = {}
    for n in args.labelled:
        for method in METHODS:
            key = f"{method}_{n}"
            workdir = os.path.join(root, key)
            if key not in results:
                summary = train_and_evaluate(_method_config(method, n, args, root), workdir)
                results[key] = {k: summary[k] for k in ("miou", "pixel_accuracy", "train_seconds", "num_labelled")}
                with open(results_path, "w") as f:
                    json.dump({"settings": vars(args), "timings": timings, "runs": results}, f, indent=2)
            cms[key] = _per_image_confusions(workdir, test_images, test_labels)
            # The scenes re-scored here are the run's own evaluation set (up to a tied pixel or two).
            assert abs(float(mean_iou_from_confusion(cms[key].sum(0))) - results[key]["miou"]) < 1e-3, key

    print("\n| method | " + " | ".join(f"{n} labelled: mIoU / pixel acc." for n in args.labelled) + " |")
    print("|---|" + "---|" * len(args.labelled))
    for method in METHODS:
        cells = [f"{results[f'{method}_{n}']['miou']:.3f} / {results[f'{method}_{n}']['pixel_accuracy']:.3f}"
                 for n in args.labelled]
        print(f"| {method} | " + " | ".join(cells) + " |")
    refinement = None
    if not args.no_pnp:
        refinement, refined_cms = _refinement(root, args, results)
        cms.update(refined_cms)
        print("plug-and-play refinement:", json.dumps(refinement))
    comparisons = _comparisons(cms, args, refinement)
    print("\n| A - B (mIoU, test scenes) | difference | 95 % interval |\n|---|---:|---|")
    for c in comparisons:
        mark = "" if c["excludes_zero"] else " (inside the noise)"
        print(f"| {c['a']} - {c['b']} | {c['mean']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}]{mark} |")
    with open(results_path, "w") as f:
        json.dump({"settings": vars(args), "timings": timings, "runs": results, "pnp": refinement,
                   "comparisons": comparisons}, f, indent=2)
    _figure(root, args.figure, results, args)
    print(json.dumps({"runs": results, "pnp": refinement, "comparisons": comparisons}))


if __name__ == "__main__":
    main()
