"""How often the Diagnose / Evaluate heatmaps are empty, whether they sit on the lungs, and whether
they pass the model-randomisation sanity check, on real test images of a real run.

    .venv/bin/python bench/saliency_quality.py [--run runs/<id>] [--images 150]

About 6 minutes for 150 images on 2 shared cores (SmoothGrad's 20 samples per map dominate).

Uses the given run, or trains a 3-epoch 64 px seed_cnn on the built-in set (under a minute) in a
temporary folder. For each method it prints, over evenly spaced test images and the predicted class:
the share of empty maps (also per predicted class), the share of the map's mass inside two lung-field
boxes (rows 15-75 %, columns 10-45 % and 55-90 %; a map spread evenly scores the box area, printed
first), for class-activation maps once with the cells tiling the whole image (as before FeatureGrid,
but fading past the outer cells like the placed map) and once placed where their cells look; and the randomisation check (median Spearman rho
with the randomised-head model's map, and the share of maps that change). For a two-class model it
also prints how often exactly one of the two classes' Grad-CAM maps is empty (the mirror effect).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def find_or_train_run(run_dir: str | None, scratch: Path):
    from core.store.run_folder import Run
    from core.store.runs import RunStore
    if run_dir:
        return Run(Path(run_dir))
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    print("training a 3-epoch 64 px seed_cnn on the built-in set ...", flush=True)
    config = TrainConfig(arch="seed_cnn", image_size=64, epochs=3, name="saliency-bench")
    run = RunStore(scratch).create(config.to_dict(), name="saliency-bench")
    execute_run(run, config)
    if run.state() != "done":
        raise SystemExit(f"training failed: {run.status().get('error')}")
    return run


def lung_fields(size: int) -> np.ndarray:
    rows, mask = slice(int(0.15 * size), int(0.75 * size)), np.zeros((size, size), bool)
    mask[rows, int(0.10 * size):int(0.45 * size)] = True
    mask[rows, int(0.55 * size):int(0.90 * size)] = True
    return mask


def lung_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    return float(heatmap[mask].sum() / heatmap.sum())


def measure(explainer, images: np.ndarray, predicted: np.ndarray, method: str, sanity: bool) -> dict:
    from core.ml import explain, maps, saliency_graph
    mask = lung_fields(images.shape[1])
    registered, stretched = explainer.grid, saliency_graph.stretched_grid(explainer.grid.cells, explainer.grid.size)
    empty, shares, old_shares, rhos = [], [], [], []
    for pixels, target in zip(images, predicted):
        heatmap = explainer.heatmap(pixels, method, int(target))
        empty.append(maps.is_empty_map(heatmap))
        if empty[-1]:
            continue
        shares.append(lung_share(heatmap, mask))
        if method in explain.CAM_METHODS:
            explainer.grid = stretched
            old_shares.append(lung_share(explainer.heatmap(pixels, method, int(target)), mask))
            explainer.grid = registered
        if sanity:
            rho = explain.sanity_check(explainer, pixels, method, int(target), heatmap).rho
            rhos.append(-1.0 if rho is None else rho)
    return {"empty": np.array(empty), "lungs": np.mean(shares),
            "lungs_stretched": np.mean(old_shares) if old_shares else None,
            "rhos": np.array(rhos)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder (default: train a 3-epoch 64 px seed_cnn)")
    parser.add_argument("--images", type=int, default=150)
    args = parser.parse_args(argv)
    from core.ml import explain, maps
    from core.ml.inference import load_model
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig
    with tempfile.TemporaryDirectory() as scratch:
        run = find_or_train_run(args.run, Path(scratch))
        dataset, split = load_data(TrainConfig.from_dict(run.config()))
        rows = split.test[np.linspace(0, len(split.test) - 1, min(args.images, len(split.test))).astype(int)]
        images, labels = dataset.images[rows], dataset.labels[rows]
        model = load_model(run)
        predicted = np.argmax(model.predict(images.astype(np.float32), verbose=0), axis=1)
        explainer = explain.Explainer(model)
    names = list(dataset.class_names)
    mask = lung_fields(images.shape[1])
    uniform_stretched = float(mask.mean())
    covered = explainer.grid.on_input(np.ones(explainer.grid.cells, np.float32))
    uniform = float(covered[mask].sum() / covered.sum())
    print(f"run {run.id}: {run.config()['arch']}, {images.shape[1]} px, feature map {explainer.feature_layer} "
          f"{explainer.grid.cells}, cells centred on pixels {explainer.grid.first[0]:.1f} + i x "
          f"{explainer.grid.step[0]:.2f}; {len(rows)} test images, accuracy {np.mean(predicted == labels):.3f}, "
          f"predicted " + ", ".join(f"{n} {int(np.sum(predicted == i))}" for i, n in enumerate(names)))
    print(f"lung-field share of an even map: {uniform_stretched:.2f} stretched, {uniform:.2f} placed")
    for method in explain.METHODS:
        result = measure(explainer, images, predicted, method, sanity=True)
        per_class = ", ".join(f"{n} {result['empty'][predicted == i].mean():.2f}" for i, n in enumerate(names)
                              if np.any(predicted == i))
        rhos = result["rhos"]
        placement = ("" if result["lungs_stretched"] is None else f"{result['lungs_stretched']:.2f} stretched -> ")
        print(f"{explain.METHODS[method]:16s} empty {result['empty'].mean():.2f} ({per_class}); lung share "
              f"{placement}{result['lungs']:.2f}; randomisation: "
              f"median rho {np.median(rhos):.2f}, changed {np.mean(rhos < maps.SANITY_RHO_LIMIT):.2f}")
    shown = [explain.heatmap_with_fallback(explainer, pixels, int(t))[1] for pixels, t in zip(images, predicted)]
    print("with the automatic fallback: " + ", ".join(f"{explain.METHODS[m]} {shown.count(m)}"
                                                       for m in explain.CAM_METHODS))
    if len(names) == 2:
        empty = np.array([[maps.is_empty_map(explainer.heatmap(p, "gradcam", c)) for c in (0, 1)] for p in images])
        print(f"Grad-CAM empty for {names[0]} {empty[:, 0].mean():.2f}, for {names[1]} {empty[:, 1].mean():.2f}, "
              f"for exactly one of the two {np.mean(empty[:, 0] != empty[:, 1]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
