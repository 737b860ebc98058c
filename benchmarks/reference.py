"""A federated loop written the way common FL research code is (the reference our engine is timed against).

Per-sample ``torch.utils.data.DataLoader`` with torchvision transforms on PIL images,
``copy.deepcopy`` of models, every client's state written with ``torch.save`` and read back
with ``torch.load`` each round, fp32, contiguous memory format, aggregation by a Python loop
over state dicts.  It trains the same client models (same backbones, U-Net, partition,
local epochs, batch size, learning rate) as our engine, so the two differ only in how the
work is organized.
"""

import copy
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms

from fedunet.client import make_optimizer
from fedunet.federated import Simulation
from fedunet.model import ClientModel


class ImageFolderLike(Dataset):
    """uint8 images served one PIL image at a time, as torchvision's datasets do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.cpu().numpy()  # torchvision's datasets live on the host
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        img = Image.fromarray(img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)))
        return self.transform(img), self.labels[i]


class FixedOrder(Sampler):
    """Yields precomputed index orders, one per epoch (to feed both loops the same batches)."""

    def __init__(self, orders: list[list[int]]):
        self.orders = orders
        self.epoch = 0

    def __iter__(self):
        order = self.orders[self.epoch % len(self.orders)]
        self.epoch += 1
        return iter(order)

    def __len__(self):
        return len(self.orders[0])


def transforms_for(sim: Simulation, augment: bool):
    mean = (sim.normalizer.shift * -1 / (sim.normalizer.scale * 255)).flatten().tolist()
    std = (1 / (sim.normalizer.scale * 255)).flatten().tolist()
    size = sim.data.input_size
    steps = []
    if augment:
        aug = sim.cfg["training"]
        steps += [transforms.RandomCrop(size, padding=aug["crop_padding"])]
        if aug["flip"]:
            steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


class ReferenceFL:
    """FedUNet trained by the common research-code recipe, built from a (not yet run) Simulation."""

    def __init__(self, sim: Simulation, augment: bool = True, orders: dict[int, list[list[int]]] | None = None):
        self.sim = sim
        self.cfg = sim.cfg
        self.device = sim.rt.device  # on a GPU: CPU data loading, then each batch copied over, as such code does
        self.dir = tempfile.mkdtemp(prefix="fedunet-reference-")
        cpu = sim.data.to("cpu")
        dataset = ImageFolderLike(cpu.train_images, cpu.train_labels, transforms_for(sim, augment))
        self.clients = []
        for c in sim.clients:
            model = ClientModel(c.model.spec)
            model.load_state_dict(c.model.state_dict())  # same initial weights as the engine
            idx = c.loader.indices.cpu().tolist()
            subset = torch.utils.data.Subset(dataset, idx)
            if orders is not None:  # positions within the subset, in the engine's order
                pos = {g: p for p, g in enumerate(idx)}
                loader = DataLoader(
                    subset,
                    batch_size=self.cfg["training"]["batch_size"],
                    sampler=FixedOrder([[pos[g] for g in o] for o in orders[c.index]]),
                )
            else:
                g = torch.Generator().manual_seed(c.index)
                loader = DataLoader(subset, batch_size=self.cfg["training"]["batch_size"], shuffle=True, generator=g)
            path = os.path.join(self.dir, f"client{c.index}.pt")
            torch.save(model.state_dict(), path)
            self.clients.append(
                {
                    "index": c.index,
                    "spec": c.model.spec,
                    "loader": loader,
                    "path": path,
                    "weight": len(idx),
                    "optimizer_state": None,
                }
            )
        self.prefix = sim.method.prefix
        self.global_state = copy.deepcopy({k: v.cpu() for k, v in sim.method.global_state.items()})

    def round(self) -> None:
        uploads = []
        for c in self.clients:
            model = ClientModel(c["spec"])
            model.load_state_dict(torch.load(c["path"]))  # the client's state, from disk
            state = model.state_dict()
            for k, v in copy.deepcopy(self.global_state).items():  # receive the global bottleneck
                state[k].copy_(v)
            model = model.to(self.device)
            opt = make_optimizer(model.parameters(), self.cfg)
            if c["optimizer_state"] is not None:
                opt.load_state_dict(torch.load(c["optimizer_state"], map_location=self.device))
            model.train()
            for _ in range(self.cfg["federated"]["local_epochs"]):
                for x, y in c["loader"]:
                    if len(y) < 2:
                        continue
                    x, y = x.to(self.device), y.to(self.device)
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            torch.save(model.state_dict(), c["path"])
            c["optimizer_state"] = c["path"] + ".opt"
            torch.save(opt.state_dict(), c["optimizer_state"])
            uploads.append(
                (c["weight"], copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items() if k.startswith(self.prefix)}))
            )
        total = sum(w for w, _ in uploads)
        new = {}
        for k, v in uploads[0][1].items():
            acc = torch.zeros_like(v, dtype=torch.float32)
            for w, s in uploads:
                acc += s[k].float() * (w / total)
            new[k] = acc if v.is_floating_point() else acc.round().to(v.dtype)
        self.global_state = new

    def models(self) -> list[ClientModel]:
        """Each client's model with the latest global bottleneck (for evaluation)."""
        out = []
        for c in self.clients:
            model = ClientModel(c["spec"])
            model.load_state_dict(torch.load(c["path"]))
            state = model.state_dict()
            for k, v in self.global_state.items():
                state[k].copy_(v)
            out.append(model.to(self.device))
        return out
