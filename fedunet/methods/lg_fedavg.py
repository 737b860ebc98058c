"""LG-FedAvg (Liang et al., 2020, "Think Locally, Act Globally: Federated Learning with Local
and Global Representations", arXiv 2001.01523).

Each client keeps its feature extractor local (here: its own backbone, brought to the common
width ``model.feature_width`` by a local projection, as HtFLlib does for heterogeneous models)
and the head ``Linear(K, C)`` is global: FedAvg-ed, weighted by samples, every round.
Sent each round, each way: the head, C x K + C floats.
"""

from fedunet.methods import register
from fedunet.methods.base import StateSharing


@register
class LGFedAvg(StateSharing):
    name = "lg-fedavg"
    prefix = "classifier."
    attach_unet = False
    needs_projection = True
