"""The node: its identity, its de-identification key, and its catalog handle."""

from mida.node.service import Node, init_node, load_node, rotate_key

__all__ = ["Node", "init_node", "load_node", "rotate_key"]
