"""How experiments/demo_real/caltech101 was made (run once; its output is committed).

Copies, unmodified, the first 40 photographs (by file name) of five Caltech-101 categories from a local
copy of 101_ObjectCategories into an ImageFolder tree whose class folders are the ImageNet ids the
categories map onto: the first 32 into ``train/`` (the pool split), the next 8 into ``val/``.

    python experiments/demo_real/make_subset.py ../shared/data/caltech101 experiments/demo_real/caltech101
"""

import shutil
import sys
from pathlib import Path

#: Caltech-101 category -> the ImageNet class it maps onto (wnid, readable name)
CATEGORIES = {
    "Motorbikes": ("n03785016", "moped"),
    "dalmatian": ("n02110341", "dalmatian"),
    "starfish": ("n02317335", "starfish"),
    "llama": ("n02437616", "llama"),
    "grand_piano": ("n03452741", "grand piano"),
}
SPLITS = {"train": 32, "val": 8}


def main(src: str, dst: str) -> None:
    for category, (wnid, _) in CATEGORIES.items():
        files = sorted(Path(src, category).glob("*.jpg"))
        start = 0
        for split, n in SPLITS.items():
            out = Path(dst, split, wnid)
            out.mkdir(parents=True, exist_ok=True)
            for f in files[start : start + n]:
                shutil.copyfile(f, out / f"{category}_{f.name}")
            start += n


if __name__ == "__main__":
    main(*sys.argv[1:3])
