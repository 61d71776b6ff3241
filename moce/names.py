"""Every name that crosses a boundary, defined once: tensors between graphs, the experts'
interface, graph names in a package, precisions and the smallest image side.

The exporter writes these names, the manifest records them and every runtime reads them; no code
parses a name to learn what it holds (the manifest's plan lists each step's graphs and tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- tensors between the plan's graphs (see moce.model.plan) ------------------------------------

IMAGE = "image"
RESTORED = "restored"
FREQ_EMB = "freq_emb"
# tile segments (see moce.model.global_stats): inputs beside the plan tensors, and their extra output
CORE_MASK = "core_mask"
USE_IMAGE_STATS = "use_image_stats"
IMAGE_STATS = "image_stats"
TILE_STATS = "tile_stats"
TILE_INPUTS = (CORE_MASK, USE_IMAGE_STATS, IMAGE_STATS)


def skip_name(level: int) -> str:
    return f"skip{level}"


@dataclass(frozen=True)
class AdapterTensors:
    """Names of the tensors around adapter ``index``."""

    index: int

    @property
    def shortcut(self) -> str:
        return f"shortcut{self.index}"

    @property
    def adapter_in(self) -> str:
        return f"adapter_in{self.index}"

    @property
    def shared(self) -> str:
        return f"shared{self.index}"

    @property
    def logits(self) -> str:
        return f"router_logits{self.index}"

    @property
    def adapter_out(self) -> str:
        return f"adapter_out{self.index}"


# -- axes and the experts' interface ------------------------------------------------------------

BATCH_DIM = "batch"
"""The symbolic batch axis of every graph input and output."""


def image_dims(level: int) -> tuple[str, str]:
    """The symbolic height and width axes of tensors at resolution ``level`` (0 = full size)."""
    return f"height_{level}", f"width_{level}"


def image_axes(level: int) -> dict[int, str]:
    """Dynamic axes of an ``[N, C, H, W]`` tensor at ``level``, as ``torch.onnx.export`` takes them."""
    return dict(zip((0, 2, 3), (BATCH_DIM, *image_dims(level))))


EXPERT_INPUTS = ("adapter_in", "shared", "gate")
EXPERT_OUTPUT = "weighted_out"


def route_name(adapter: int) -> str:
    """Whole-network graphs output each adapter's chosen experts under this name."""
    return f"route{adapter}"


def probs_name(adapter: int) -> str:
    """... and the router's softmax under this one."""
    return f"router_probs{adapter}"


# -- graphs of a package ------------------------------------------------------------------------


def segment_graph(index: int) -> str:
    return f"segment{index}"


def tile_segment_graph(index: int) -> str:
    """Segment ``index`` for tiles that share image-wide sums (see moce.model.global_stats)."""
    return f"tile_segment{index}"


def expert_graph(adapter: int, expert: int) -> str:
    return f"adapter{adapter}.expert{expert}"


CONDITIONAL_GRAPH = "conditional"
"""The whole network with ``If`` nodes choosing the experts (one image per call)."""
DENSE_GRAPH = "dense"
"""The whole network running every expert, weighted by the one-hot top-k gate."""
WHOLE_GRAPHS = (CONDITIONAL_GRAPH, DENSE_GRAPH)
ROUTING_MODES = ("split", *WHOLE_GRAPHS)
"""The routing forms: the split plan (the host launches the chosen experts) and the whole-network graphs."""

# -- precisions and sizes -----------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
"""Every precision a backend runs (``--precision``)."""
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
"""What the package's ONNX graphs come in; bf16 is the torch backend's alone."""
VARIANT_PRECISIONS = GRAPH_PRECISIONS[1:]
"""The graph precisions ``moce build-engine`` writes beside the exported fp32 graphs."""
CPU_INT8 = "int8-cpu"
"""The int8 variant placed for ONNX Runtime on x86 CPUs, beside ``int8`` (placed for TensorRT):
``moce build-engine --int8`` writes both, and ``--precision int8`` on the CPU reads this one."""

MIN_SIDE = 8
"""The smallest image side the network restores: reflect padding to a multiple of 8 needs a side
longer than the padding (and the network down-samples three times)."""
