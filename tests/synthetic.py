"""Small synthetic datasets for tests: real image files, written in the layouts users bring."""
import io

from PIL import Image


def jpeg_bytes(value: int, size=(40, 30), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_chest_folder(root, n_patients=6, images_per_patient=2, split_dirs=False):
    """A tiny Kermany-style tree: NORMAL/IM-xxxx-000y.jpeg, PNEUMONIA/personN_{bacteria,virus}_k.jpeg.

    Normal images are dark and pneumonia images bright, so a model can learn the task in a step or two.
    """
    splits = ("train", "val", "test") if split_dirs else ("",)
    k = 0
    for s_i, split in enumerate(splits):
        for p in range(n_patients):
            pid = 100 * (s_i + 1) + p
            for i in range(images_per_patient):
                k += 1
                normal = root / split / "NORMAL" / f"IM-{pid:04d}-{i + 1:04d}.jpeg"
                kind = "bacteria" if p % 2 else "virus"
                sick = root / split / "PNEUMONIA" / f"person{pid}_{kind}_{k}.jpeg"
                for path, value in ((normal, 60), (sick, 200)):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(jpeg_bytes(value))
    return root


def make_medmnist_npz(path, sizes=(("train", 60), ("val", 20), ("test", 20)), classes=3):
    """A MedMNIST-style .npz: {split}_images (n, 28, 28) uint8 and {split}_labels (n, 1), 100 images."""
    import numpy as np
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in sizes:
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1)
    np.savez(path, **arrays)
    return path
