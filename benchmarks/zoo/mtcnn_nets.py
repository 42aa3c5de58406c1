"""MTCNN's P-, R- and O-nets as facenet-pytorch 2.6.0 defines them, and its face-detection cascade in numpy.

The modules mirror facenet_pytorch/models/mtcnn.py (PReLU, MaxPool2d(ceil_mode=True), softmax
heads, the same output order) so the wheel's state dicts load strictly; `cascade` follows
facenet_pytorch/models/utils/detect_face.py (pyramid with min face 20 and factor 0.709, thresholds
0.6/0.7/0.7, NMS 0.5/0.7/0.7/'Min' 0.7, area resampling). Any stage can be swapped for a runner:
PNet through `tiled_pnet`, which covers any pyramid level with fixed-size tiles (PNet is fully
convolutional: an output cell sees a 12-pixel window at stride 2), ONet through `batched`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.zoo import CACHE, Runner, wheel_file

WHEEL = "facenet-pytorch==2.6.0"
TILE = 218  # PNet's fixed input side: astronaut's second pyramid level, int(512 * 0.6 * 0.709 + 1)
Stage = Callable[[np.ndarray], list[np.ndarray]]  # a [N,3,H,W] float32 batch → the net's outputs


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.softmax4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Softmax(dim=1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2, self.pool2 = nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.softmax5_1, self.dense5_2 = nn.Linear(128, 2), nn.Softmax(dim=1), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def load(name: str, cache: Path = CACHE) -> nn.Module:
    """The pretrained net `name` (pnet/rnet/onet), its plain state dict loaded strictly, in eval mode."""
    net = NETS[name]()
    state = torch.load(wheel_file(WHEEL, f"facenet_pytorch/data/{name}.pt", cache), weights_only=True, map_location="cpu")
    net.load_state_dict(state, strict=True)
    return net.eval()


def torch_stage(net: nn.Module) -> Stage:
    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [out.numpy() for out in net(torch.from_numpy(np.ascontiguousarray(batch)))]
    return run


def batched(run: Runner) -> Stage:
    """A stage from a runner fed one sample at a time (packages may be compiled for batch 1)."""
    def stage(batch: np.ndarray) -> list[np.ndarray]:
        outs = [run({"x": sample[None]}) for sample in batch]
        return [np.concatenate([np.asarray(o[k]).reshape(1, -1) for o in outs]) for k in range(len(outs[0]))]
    return stage


def tiled_pnet(run: Runner, tile: int = TILE) -> Stage:
    """A PNet stage for any [1,3,H,W] level from a runner that takes [1,3,tile,tile] (tile even)."""
    cells = tile // 2 - 5  # output cells per tile side; a tile step of 2*cells pixels keeps them contiguous

    def stage(level: np.ndarray) -> list[np.ndarray]:
        height, width = level.shape[2:]
        out_h, out_w = math.ceil((height - 2) / 2) - 4, math.ceil((width - 2) / 2) - 4
        rows, cols = math.ceil(out_h / cells), math.ceil(out_w / cells)
        padded = np.zeros((1, 3, (rows - 1) * 2 * cells + tile, (cols - 1) * 2 * cells + tile), np.float32)
        padded[:, :, :height, :width] = level
        reg = np.zeros((1, 4, rows * cells, cols * cells), np.float32)
        prob = np.zeros((1, 2, rows * cells, cols * cells), np.float32)
        for i in range(rows):
            for j in range(cols):
                y, x = 2 * cells * i, 2 * cells * j
                r, p = run({"x": padded[:, :, y:y + tile, x:x + tile]})
                reg[:, :, i * cells:(i + 1) * cells, j * cells:(j + 1) * cells] = r
                prob[:, :, i * cells:(i + 1) * cells, j * cells:(j + 1) * cells] = p
        return [reg[:, :, :out_h, :out_w], prob[:, :, :out_h, :out_w]]
    return stage


def resample(image: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[1,3,H,W] float pixels → area-resampled, MTCNN-normalized float32 numpy."""
    out = nn.functional.interpolate(image, size=size, mode="area")
    return ((out - 127.5) * 0.0078125).numpy().astype(np.float32)


def pyramid(height: int, width: int, min_face: int = 20, factor: float = 0.709) -> list[float]:
    scale, side, scales = 12.0 / min_face, min(height, width) * 12.0 / min_face, []
    while side >= 12:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy NMS on rows [x1,y1,x2,y2,score,...]: torchvision's IoU, or facenet's 'min' (+1 sizes)."""
    plus = 1.0 if mode == "min" else 0.0
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order, keep = np.argsort(-score, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        overlap = inter / np.minimum(area[i], area[rest]) if mode == "min" else inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.array(keep, np.int64)


def rerec(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] += w * 0.5 - side * 0.5
    boxes[:, 1] += h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return boxes


def crops(image: torch.Tensor, boxes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(normalized [N,3,side,side] crops, indices of the boxes that gave a crop), as facenet's pad()."""
    height, width = image.shape[2:]
    out, kept = [], []
    for index, (x, y, ex, ey) in enumerate(np.trunc(boxes[:, :4]).astype(np.int64)):
        x, y, ex, ey = max(x, 1), max(y, 1), min(ex, width), min(ey, height)
        if ey > y - 1 and ex > x - 1:
            out.append(resample(image[:, :, y - 1:ey, x - 1:ex], (side, side)))
            kept.append(index)
    return (np.concatenate(out) if out else np.zeros((0, 3, side, side), np.float32)), np.array(kept, np.int64)


def cascade(pixels: np.ndarray, pnet: Stage, rnet: Stage, onet: Stage, keep_onet_inputs: list | None = None) -> np.ndarray:
    """Faces in an RGB uint8 HxWx3 image: rows [x1, y1, x2, y2, score], best first."""
    image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float()
    height, width = pixels.shape[:2]
    found = []
    for scale in pyramid(height, width):
        reg, prob = pnet(resample(image, (int(height * scale + 1), int(width * scale + 1))))[:2]
        ys, xs = np.nonzero(prob[0, 1] >= 0.6)
        if not len(ys):
            continue
        cells = np.stack([xs, ys], axis=1).astype(np.float32)
        boxes = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale),
                                prob[0, 1, ys, xs][:, None], reg[0][:, ys, xs].T], axis=1)
        found.append(boxes[nms(boxes, 0.5)])
    if not found:
        return np.zeros((0, 5), np.float32)
    boxes = np.concatenate(found)
    boxes = boxes[nms(boxes, 0.7)]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = rerec(np.concatenate([boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1), boxes[:, 4:5]], axis=1))
    data, kept = crops(image, boxes, 24)
    if len(kept):
        reg, prob = rnet(data)[:2]
        passed = prob[:, 1] > 0.7
        boxes = np.concatenate([boxes[kept][passed, :4], prob[passed, 1:2]], axis=1)
        reg = reg[passed]
        pick = nms(boxes, 0.7)
        boxes = rerec(bbreg(boxes[pick], reg[pick]))
    data, kept = crops(image, boxes, 48)
    if keep_onet_inputs is not None:
        keep_onet_inputs.append(data)
    if not len(kept):
        return np.zeros((0, 5), np.float32)
    reg, _, prob = onet(data)[:3]
    passed = prob[:, 1] > 0.7
    boxes = bbreg(np.concatenate([boxes[kept][passed, :4], prob[passed, 1:2]], axis=1), reg[passed])
    return boxes[nms(boxes, 0.7, "min")]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def photos() -> dict[str, np.ndarray]:
    """Bundled RGB photos (uint8 HxWx3): astronaut is the only one with a face."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    found = {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}
    found.update(zip(("china", "flower"), load_sample_images().images))
    return found


def level_tiles(pixels: np.ndarray, scale: float, corners: tuple[tuple[float, float], ...]) -> list[np.ndarray]:
    """TILE x TILE crops of one pyramid level (zero-padded when smaller), at relative (top, left) corners."""
    image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float()
    height, width = pixels.shape[:2]
    level = resample(image, (int(height * scale + 1), int(width * scale + 1)))[0]
    padded = np.zeros((3, max(TILE, level.shape[1]), max(TILE, level.shape[2])), np.float32)
    padded[:, :level.shape[1], :level.shape[2]] = level
    spare_y, spare_x = padded.shape[1] - TILE, padded.shape[2] - TILE
    return [padded[:, int(spare_y * top):int(spare_y * top) + TILE, int(spare_x * left):int(spare_x * left) + TILE]
            for top, left in corners]


def windows(pictures: dict[str, np.ndarray], face: np.ndarray, count: int) -> np.ndarray:
    """`count` normalized 48x48 crops (seeded): half jittered around astronaut's face, half anywhere in the others."""
    rng = np.random.default_rng(0)
    names = [name for name in pictures if name != "astronaut"]
    boxes, sources = [], []
    for index in range(count):
        if index % 2 == 0:
            side = (face[2] - face[0]) * rng.uniform(0.8, 1.3)
            x, y = face[0] + rng.uniform(-0.2, 0.2) * side, face[1] + rng.uniform(-0.2, 0.2) * side
            sources.append("astronaut")
        else:
            sources.append(names[index // 2 % len(names)])
            height, width = pictures[sources[-1]].shape[:2]
            side = rng.uniform(40, min(height, width) / 2)
            x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        boxes.append(np.array([[x, y, x + side, y + side]]))
    out = [crops(torch.from_numpy(np.array(pictures[name])).permute(2, 0, 1)[None].float(), box, 48)[0]
           for name, box in zip(sources, boxes)]
    return np.concatenate(out)


def onet_inputs(pixels: np.ndarray, nets: dict[str, nn.Module]) -> np.ndarray:
    """The 48x48 crops the reference cascade feeds ONet on one photo."""
    kept: list[np.ndarray] = []
    cascade(pixels, *(torch_stage(nets[name]) for name in ("pnet", "rnet", "onet")), keep_onet_inputs=kept)
    return kept[0]


def build_zoo(stage: str, cache: Path = CACHE):
    """The ZooModel of `stage` ('pnet' or 'onet'): data, reference and the face-box task on astronaut."""
    from benchmarks.zoo import Feed, TaskScore, ZooModel, save_feeds

    nets = {name: load(name, cache) for name in NETS}
    pictures = photos()
    stages = {name: torch_stage(net) for name, net in nets.items()}
    want = cascade(pictures["astronaut"], stages["pnet"], stages["rnet"], stages["onet"])
    if len(want) != 1:
        raise RuntimeError(f"the reference MTCNN finds {len(want)} faces on astronaut, expected 1")
    if stage == "pnet":
        first, second = pyramid(512, 512)[:2]
        evaluation = level_tiles(pictures["astronaut"], second, ((0, 0),))
        evaluation += level_tiles(pictures["astronaut"], first, ((0, 0), (0, 1), (1, 0), (1, 1), (0.5, 0.5)))
        calib = [tile for name, pixels in pictures.items() if name != "astronaut"
                 for scale in pyramid(*pixels.shape[:2])[:2] for tile in level_tiles(pixels, scale, ((0, 0), (0.5, 0.5)))]
        arrays = {"calib": np.stack(calib), "eval": np.stack(evaluation)}
    else:
        evaluation = onet_inputs(pictures["astronaut"], nets)
        found = [onet_inputs(pixels, nets)[:4] for name, pixels in pictures.items() if name != "astronaut"]
        calib = np.concatenate(found + [windows(pictures, want[0], 20 - sum(map(len, found)))])
        arrays = {"calib": calib, "eval": evaluation}
    data = cache / "data" / f"mtcnn_{stage}"
    calib_path, eval_path = (save_feeds(data / f"{part}.npz", {"x": arrays[part]}) for part in ("calib", "eval"))

    def reference(feed: Feed) -> list[np.ndarray]:
        return stages[stage](feed["x"])

    def task(run: Runner) -> TaskScore:
        swapped = dict(stages, **{stage: tiled_pnet(run) if stage == "pnet" else batched(run)})
        got = cascade(pictures["astronaut"], swapped["pnet"], swapped["rnet"], swapped["onet"])
        if not len(got):
            return TaskScore("face box IoU", 0.0, "no face found on astronaut")
        box = ", ".join(f"{v:.1f}" for v in got[0, :4])
        return TaskScore("face box IoU", iou(got[0], want[0]), f"{len(got)} face(s); best [{box}] p={got[0, 4]:.4f}")

    how = (f"PNet fixed at 1x3x{TILE}x{TILE} (astronaut's 2nd pyramid level); the task covers every pyramid level with "
           "tiles of that size (exact: an output cell sees 12 px at stride 2)" if stage == "pnet" else
           "ONet at 1x3x48x48, fed crop by crop; eval = the reference cascade's ONet inputs on astronaut")
    return ZooModel(f"mtcnn_{stage}", f"benchmarks/zoo/mtcnn_{stage}.py:factory", calib_path, eval_path, reference, task,
                    notes=f"facenet-pytorch 2.6.0 MTCNN weights; cascade P→R→O with the zoo net swapped in. {how}",
                    extra={"reference_box": [float(v) for v in want[0]]})
