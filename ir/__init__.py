"""graphc's intermediate representation (see :mod:`graphc.ir.graph` for the invariants)."""
from graphc.ir.graph import Graph, Node, Param, Use, Value
from graphc.ir.types import TensorType
from graphc.ir import ops  # noqa: F401  (defines the op table)
from graphc.ir.printer import parse_graph, print_graph
from graphc.ir.serialize import load_json, save_json, to_dot
from graphc.ir.verify import verify

__all__ = [
    "Graph", "Node", "Param", "Use", "Value", "TensorType",
    "parse_graph", "print_graph", "load_json", "save_json", "to_dot", "verify",
]
